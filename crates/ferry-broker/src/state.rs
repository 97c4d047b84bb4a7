//! What every connection shares: the config, the topic store, and the "new data" signal.

use std::sync::Arc;

use ferry_log::Store;
use tokio::sync::Notify;

use crate::BrokerConfig;
use crate::groups::Groups;
use crate::producer_ids::ProducerIds;
use crate::txn::TxnCoordinator;

/// The one node id of this single-node cluster.
pub const NODE_ID: i32 = 0;

/// Shared broker state, one per running broker.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the broker was started with.
    pub config: BrokerConfig,
    /// Topics and their partition logs.
    pub store: Store,
    /// Woken whenever any partition's high watermark advances; long-polling fetches wait on it.
    pub data_ready: Arc<Notify>,
    /// Host and port clients are told to connect to.
    pub advertised: (String, i32),
    /// Stable id of this data directory, reported in Metadata.
    pub cluster_id: String,
    /// Consumer groups: membership and committed offsets.
    pub groups: Groups,
    /// Producer id allocation for idempotent and transactional producers.
    pub producer_ids: Arc<ProducerIds>,
    /// Broker configs changed at runtime (AlterConfigs on the BROKER resource).
    pub dynamic: crate::dynamic_config::DynamicConfigs,
    /// The transaction coordinator.
    pub txns: TxnCoordinator,
}

impl Shared {
    /// The topic named `name`, created with the default partition count when auto-creation is on
    /// and `allow` says the client wants it. `Ok(None)`: unknown and not created.
    pub fn topic_for_write(
        &self,
        name: &str,
        allow: bool,
    ) -> ferry_log::Result<Option<Arc<ferry_log::Topic>>> {
        if let Some(t) = self.store.topic(name) {
            return Ok(Some(t));
        }
        // Kafka never auto-creates its internal topics: a metadata request for one must not leave
        // an empty ordinary topic behind that lag monitors then read as the offsets topic.
        if allow && self.config.auto_create_topics && !is_internal_topic(name) {
            let topic = self
                .store
                .get_or_create_topic(name, self.config.default_partitions)?;
            tracing::info!(
                topic = name,
                partitions = topic.partition_count(),
                "auto-created topic"
            );
            return Ok(Some(topic));
        }
        Ok(None)
    }
}

/// Kafka's internal topics (`__consumer_offsets`, `__transaction_state`): flagged internal in
/// Metadata and never auto-created.
pub fn is_internal_topic(name: &str) -> bool {
    matches!(name, "__consumer_offsets" | "__transaction_state")
}
