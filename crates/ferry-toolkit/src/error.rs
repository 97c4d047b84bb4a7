//! The crate's one error type.

use std::time::Duration;

/// Everything that can go wrong in the toolkit, outside a handler's own errors (those are
/// [`crate::HandlerError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message could not be serialized to JSON.
    #[error("cannot encode a {type_name} message: {source}")]
    Encode {
        /// The message's type name.
        type_name: &'static str,
        /// What serde said.
        source: serde_json::Error,
    },
    /// A payload is not valid JSON for the type its envelope names. serde may quote the value
    /// it choked on, so the text is redacted ([`crate::redact::text`]): it ends up in logs and
    /// in dead letters' `ferry-dlq-error`.
    #[error("cannot decode a {type_name} message: {}", crate::redact::text(&.source.to_string()))]
    Decode {
        /// The type name the payload was decoded as.
        type_name: String,
        /// What serde said.
        source: serde_json::Error,
    },
    /// A payload is JSON but breaks its type's JSON Schema ([`crate::Message::json_schema`]).
    /// Redacted like [`Error::Decode`]: a violation may quote the value.
    #[error("a {type_name} message breaks its schema: {}", crate::redact::text(.violations))]
    Schema {
        /// The message's type name.
        type_name: &'static str,
        /// The first violations, each with where it is.
        violations: String,
    },
    /// An envelope header that must be there is missing.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// An envelope header is there but cannot be parsed.
    #[error("bad header {name}: {value:?}")]
    BadHeader {
        /// The header's name.
        name: &'static str,
        /// Its value, lossily decoded as UTF-8.
        value: String,
    },
    /// A message's envelope cannot be read: a malformed structured-mode CloudEvent, or a plain
    /// message its [`crate::PlainTyping`] cannot type.
    #[error("bad envelope: {0}")]
    Envelope(String),
    /// The Kafka client reported an error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A reply was asked for, but the incoming message names no reply topic.
    #[error("the message has no ce_replyto header")]
    NoReplyTo,
    /// No reply arrived in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// A reply arrived but is not of the expected type.
    #[error("expected a {expected} reply, got {got}")]
    UnexpectedReply {
        /// The reply type the caller asked for.
        expected: &'static str,
        /// The type name the reply carried.
        got: String,
    },
    /// The component was shut down while the operation waited.
    #[error("shut down")]
    Stopped,
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A background task failed (it panicked or its runtime went away).
    #[error("background task failed: {0}")]
    Task(String),
    /// An I/O error, such as binding the HTTP listener.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The database reported an error (connection, query, constraint, ...).
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    /// A migration failed; it was rolled back and not recorded, so the next start retries it.
    #[error("migration {version} ({name}) of {service} failed: {source}")]
    Migration {
        /// The service whose migration failed (`ferry-toolkit` for the toolkit's tables).
        service: String,
        /// Its version.
        version: i64,
        /// Its name.
        name: String,
        /// What the database said.
        source: sqlx::Error,
    },
    /// A topic name is not acceptable where it was given (not a legal Kafka topic name, or not a
    /// dead-letter topic where one is needed).
    #[error("invalid topic name {topic:?}: {reason}")]
    InvalidTopic {
        /// The name given (cut to 250 characters).
        topic: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A topic that must exist does not (and was not created).
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// The broker cannot be reached now (the transport retries with backoff).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused a message (a publisher nack, or no queue took it).
    #[error("rejected by the broker: {0}")]
    Rejected(String),
    /// A Kafka protocol exchange of [`crate::kafka::wire`] failed: an error code, a response
    /// that cannot be decoded, or no version both sides implement.
    #[error("kafka protocol: {0}")]
    Protocol(String),
    /// The AMQP client reported an error.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The handler passed to [`crate::sql::inbox::process_once`] failed; its transaction was
    /// rolled back. Converting this error back into a [`crate::HandlerError`] (with `?` in a
    /// handler) gives the original error, permanence included.
    #[error("handler failed: {0}")]
    Handler(crate::HandlerError),
}

impl Error {
    /// Whether the broker refused a message for good, so that sending it again can never
    /// succeed: too large for the topic, an invalid record, a topic that does not exist (and is
    /// not auto-created) or whose name is invalid. The outbox relay parks such a row instead of
    /// retrying it forever; every other failure (broker down, timeouts, leadership moving) is
    /// transient and retried.
    pub fn is_permanent_rejection(&self) -> bool {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};
        match self {
            Error::Kafka(KafkaError::MessageProduction(code)) => matches!(
                code,
                Code::MessageSizeTooLarge
                    | Code::InvalidMessageSize
                    | Code::InvalidMessage
                    | Code::InvalidRecord
                    | Code::MessageBatchTooLarge
                    | Code::UnknownTopic
                    | Code::UnknownTopicOrPartition
                    | Code::InvalidTopic
                    | Code::TopicAuthorizationFailed
            ),
            _ => false,
        }
    }
}

/// `Result` with the toolkit's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
