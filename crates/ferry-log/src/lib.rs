//! Ferry's durable partition log.
//!
//! Each partition of each topic is an append-only log of Kafka record batches (magic 2), stored
//! **verbatim** with the base offset the log assigned, so a fetch can send file bytes straight back
//! to a consumer. The crate reads batch headers only and never decodes records. It is plain blocking
//! `std` I/O with `parking_lot` locks and no async runtime: the broker calls it from blocking tasks.
//!
//! # Model
//!
//! * [`Store`] is the set of topics in a data directory; a [`Topic`] owns one [`PartitionLog`] per
//!   partition.
//! * A [`PartitionLog`] is a list of segments. Appends go to the last (*active*) segment, which is
//!   *rolled* (fsynced, its indexes written, a new one started) when it would exceed `segment.bytes`
//!   or grows older than `segment.ms`. Retention deletes whole closed segments, oldest first.
//! * Compaction (`cleanup.policy=compact`, [`PartitionLog::clean`]) rewrites closed segments keeping
//!   the latest record per key; offsets never move, they get gaps. It is the one place records are
//!   decoded (`cleaner`).
//! * Appends are written but not fsynced. [`PartitionLog::flush_to`] is a group commit: concurrent
//!   callers share one fsync. Only fsynced data is below the *high watermark*, and only that is ever
//!   read, so consumers never see data a crash could lose. A [`DurableListener`] hears every advance.
//! * Idempotent producers (KIP-98) are checked on append: per producer id the partition keeps the
//!   epoch and the last five batches' sequences, rejects batches out of sequence or from a fenced
//!   epoch, and answers a retry with the original offsets instead of writing it twice. The state is
//!   rebuilt from the batch headers of the log on open.
//! * Transactions (KIP-98): a transactional producer's batches stay *unstable* until the control
//!   batch (marker) the broker's coordinator appends with [`PartitionLog::append_marker`] commits
//!   or aborts them. The partition tracks open transactions, the *last stable offset* below which
//!   `read_committed` consumers read ([`PartitionLog::read_committed`]), and the aborted
//!   transactions a fetch must report; all rebuilt from the log on open.
//! * Recovery on open checks every batch of the active segment (lengths, magic, CRC-32C, offset
//!   continuity) and truncates a torn tail; closed segments are trusted, and only their index files
//!   are checked and rebuilt if needed.
//!
//! # On-disk layout
//!
//! ```text
//! <root>/topics/<topic>/topic.json                      TopicMeta: name, id, partitions, overrides
//! <root>/topics/<topic>/<partition>/<base:020>.log       batches back to back, base = first offset
//! <root>/topics/<topic>/<partition>/<base:020>.index     sparse: (offset - base u32, position u32)
//! <root>/topics/<topic>/<partition>/<base:020>.timeindex (max timestamp so far i64, offset - base u32)
//! <root>/topics/<topic>/<partition>/log-start-offset     set by DeleteRecords (decimal), if ever
//! <root>/topics/<topic>/<partition>/<base:020>.log.cleaned, .log.swap  a clean in progress
//! <root>/topics/<topic>/<partition>/cleaner.checkpoint  first dirty offset (compacted below it)
//! <root>/tmp/                                            topics being created or deleted
//! ```
//!
//! Index files exist for closed segments only; the active segment's indexes are in memory and
//! rebuilt by recovery. All integers on disk are big-endian, as in the Kafka protocol.

mod batch;
mod cleaner;
mod config;
mod error;
mod index;
mod partition;
mod producers;
mod segment;
mod store;
mod topic_configs;
mod transactions;

pub use batch::{BATCH_HEADER_LEN, BatchHeader, MAGIC, validate_batches};
pub use cleaner::records::keyless_records;
pub use cleaner::{CleanStats, CleanerOptions};
pub use config::{CONFIG_NAMES, LogConfig};
pub use error::{Error, Result};
pub use partition::{AppendInfo, DurableListener, PartitionLog, ReadResult};
pub use producers::ProducerSnapshot;
pub use store::{MAX_PARTITIONS, Store, Topic, TopicMeta};
pub use topic_configs::{
    ConfigType, TOPIC_CONFIGS, TopicConfigDef, topic_config, topic_config_for_server_name,
};
pub use transactions::AbortedTxn;
