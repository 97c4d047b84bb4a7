//! The crate's single error type.
//!
//! Variants are split by what the caller must do about them: the broker maps `CorruptBatch`,
//! `InvalidRecords`, `RecordTooLarge`, `OffsetOutOfRange`, `InvalidProducerEpoch` and
//! `OutOfOrderSequence` to Kafka error codes for the client, the topic-administration variants to
//! CreateTopics/DeleteTopics codes, and treats `Io`, `CorruptLog` and `CorruptMetadata` as storage
//! failures.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in `ferry-log`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A record batch failed its CRC-32C check (Kafka `CORRUPT_MESSAGE`).
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),

    /// A produce payload is malformed in some other way: truncated, wrong magic, inconsistent lengths or
    /// counts, trailing bytes (Kafka `INVALID_RECORD`).
    #[error("invalid records: {0}")]
    InvalidRecords(String),

    /// A batch is larger than the topic's `max.message.bytes` (Kafka `MESSAGE_TOO_LARGE`).
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    RecordTooLarge {
        /// Size of the offending batch in bytes.
        size: usize,
        /// The configured limit.
        max: u32,
    },

    /// A read asked for an offset outside `[start, end]` (Kafka `OFFSET_OUT_OF_RANGE`).
    #[error("offset {requested} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The offset the caller asked for.
        requested: i64,
        /// The log start offset at the time of the request.
        start: i64,
        /// The high watermark at the time of the request.
        end: i64,
    },

    /// A batch's producer epoch is older than the partition's current epoch for its producer id: a
    /// newer instance of the producer has taken over and this one is fenced (Kafka
    /// `INVALID_PRODUCER_EPOCH`).
    #[error("producer {producer_id} epoch {epoch} is older than its current epoch {current}")]
    InvalidProducerEpoch {
        /// The batch's producer id.
        producer_id: i64,
        /// The batch's producer epoch.
        epoch: i16,
        /// The newest epoch the partition has seen for this producer id.
        current: i16,
    },

    /// An idempotent producer's batch does not start with the sequence number that follows its last
    /// batch, or a new epoch does not start at 0, or a payload mixes retried and new batches (Kafka
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER`).
    #[error("producer {producer_id} sent sequence {got}, expected {expected}")]
    OutOfOrderSequence {
        /// The batch's producer id.
        producer_id: i64,
        /// The base sequence the partition expected.
        expected: i32,
        /// The batch's base sequence.
        got: i32,
    },

    /// A topic configuration key is unknown or its value cannot be parsed (Kafka `INVALID_CONFIG`).
    #[error("invalid config: {0}")]
    InvalidConfig(String),

    /// A topic name breaks Kafka's naming rules (Kafka `INVALID_TOPIC_EXCEPTION`).
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),

    /// The topic already exists (Kafka `TOPIC_ALREADY_EXISTS`).
    #[error("topic {0:?} already exists")]
    TopicExists(String),

    /// No topic by that name (Kafka `UNKNOWN_TOPIC_OR_PARTITION`).
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),

    /// A partition count is not acceptable: below one, or not an increase (Kafka `INVALID_PARTITIONS`).
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),

    /// The partition was deleted (its topic was deleted) while the caller still held it.
    #[error("partition log at {0} has been deleted")]
    Deleted(PathBuf),

    /// Data below the log end that should be valid is not: a segment was damaged after it was written.
    #[error("corrupt log {path} at byte {position}: {reason}")]
    CorruptLog {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the bad batch in that file.
        position: u64,
        /// What was wrong.
        reason: String,
    },

    /// A topic metadata file cannot be parsed.
    #[error("corrupt topic metadata {path}: {reason}")]
    CorruptMetadata {
        /// The `topic.json` file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },

    /// An operating-system I/O error, with the file it happened on.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the path an I/O error happened on, so that log lines and errors name the file.
pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
