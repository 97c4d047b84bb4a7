//! The APIs and versions this broker implements, and what it advertises in ApiVersions.
//!
//! Clients pick features from ApiVersions, so this table lists only what the handlers really
//! implement (a pitfall of other Kafka-compatible brokers is advertising more). Each range is
//! also inside what the `kafka-protocol` crate can decode and encode.

use kafka_protocol::messages::ApiKey;

/// One implemented API with its inclusive version range.
#[derive(Debug, Clone, Copy)]
pub struct Supported {
    /// The API.
    pub key: ApiKey,
    /// Lowest version handled.
    pub min: i16,
    /// Highest version handled.
    pub max: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> Supported {
    Supported { key, min, max }
}

/// Every API the broker answers: at least every version Apache Kafka 4.0 supports (the KIP-896
/// baseline; record batches of magic 2 need Produce >= 3 and Fetch >= 4). Versions Kafka 4.0
/// removed are refused; the few whose responses can carry the error get UNSUPPORTED_VERSION
/// (`handlers::legacy`).
pub const SUPPORTED: &[Supported] = &[
    api(ApiKey::Produce, 3, 12),
    // v13+ address topics by id (`handlers::fetch`).
    api(ApiKey::Fetch, 4, 17),
    api(ApiKey::ListOffsets, 1, 10),
    api(ApiKey::Metadata, 0, 13),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::FindCoordinator, 0, 6),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    // v9 (KIP-848): member epochs of consumer-protocol groups.
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::DescribeGroups, 0, 6),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::InitProducerId, 0, 5),
    // Admin APIs (issue 16): every version Kafka 4.0 supports.
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    api(ApiKey::OffsetDelete, 0, 0),
    api(ApiKey::DescribeCluster, 0, 2),
    api(ApiKey::DescribeLogDirs, 1, 4),
    api(ApiKey::ElectLeaders, 0, 2),
    api(ApiKey::AlterPartitionReassignments, 0, 1),
    api(ApiKey::ListPartitionReassignments, 0, 0),
    // Transactions, at Kafka 4.0's versions. The newest (KIP-890) only say that the client
    // understands TRANSACTION_ABORTABLE, which this broker never needs to send. Transactions V2
    // (epoch bump per transaction, EndTxn v5 semantics, implicit AddPartitionsToTxn in Produce
    // v12) is switched on by the `transaction.version` feature, which the broker does not
    // advertise, so clients keep V1 behaviour at these versions. AddPartitionsToTxn v4+ is the
    // batched, verify-only form that brokers send each other.
    api(ApiKey::AddPartitionsToTxn, 0, 5),
    api(ApiKey::AddOffsetsToTxn, 0, 4),
    api(ApiKey::EndTxn, 0, 5),
    api(ApiKey::TxnOffsetCommit, 0, 5),
    api(ApiKey::DescribeTransactions, 0, 0),
    // v2 adds a transactional-id regex filter (Java regex syntax): not implemented.
    api(ApiKey::ListTransactions, 0, 1),
    api(ApiKey::DescribeProducers, 0, 0),
    // The consumer group protocol (KIP-848), at the versions librdkafka 2.12+ and Kafka 4.x use.
    api(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    api(ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// The supported range for `key`, if the broker implements it at all.
pub fn supported(key: ApiKey) -> Option<Supported> {
    SUPPORTED.iter().copied().find(|s| s.key == key)
}

/// Whether `key` at `version` is handled.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    supported(key).is_some_and(|s| (s.min..=s.max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_range_is_inside_the_codec_range() {
        for s in SUPPORTED {
            let codec = s.key.valid_versions();
            assert!(s.min <= s.max, "{:?}", s.key);
            assert!(
                codec.min <= s.min && s.max <= codec.max,
                "{:?}: {}..{} vs {codec}",
                s.key,
                s.min,
                s.max
            );
        }
    }
}
