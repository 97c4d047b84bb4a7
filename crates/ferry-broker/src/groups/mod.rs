//! Consumer groups: the classic membership state machine ([`coordinator`]), the consumer-protocol
//! (KIP-848) groups ([`consumer`], with the broker-side [`assignor`]s) and the durable committed
//! offsets ([`store`]), tied together for the handlers.
//!
//! A group id is either a classic group or a consumer-protocol group, never both. Kafka's
//! conversion rules: a ConsumerGroupHeartbeat to an empty classic group turns it into a consumer
//! group (to one with members: GROUP_ID_NOT_FOUND); a JoinGroup to an empty consumer group turns
//! it into a classic one (to one with members: INCONSISTENT_GROUP_PROTOCOL). Both checks run
//! under the consumer lock, which is always taken before the classic one.

pub mod assignor;
pub mod consumer;
pub mod coordinator;
pub mod offsets_topic;
mod reconcile;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

pub use consumer::{ConsumerGroups, Heartbeat, HeartbeatError, HeartbeatOk, TopicsView};
pub use coordinator::{Coordinator, GenerationRecord, GroupError, JoinOutcome, JoinRequest};
pub use store::{Committed, GroupStore, StoreError};

/// How often session timeouts and rebalance deadlines are checked.
pub const TICK: Duration = Duration::from_millis(100);

/// Membership plus durable offsets.
#[derive(Debug)]
pub struct Groups {
    /// Membership and rebalances (in memory).
    pub coordinator: Coordinator,
    /// Consumer-protocol groups (in memory). Lock order: this before the classic coordinator's.
    pub consumer: Mutex<ConsumerGroups>,
    /// Committed offsets and generations (on disk).
    pub store: Arc<GroupStore>,
}

impl Groups {
    /// Open the store under `<data>/groups` and seed the coordinator with the known groups.
    pub fn open(
        data_dir: &Path,
        consumer_session_timeout: Duration,
        consumer_heartbeat_interval: Duration,
    ) -> Result<Groups, StoreError> {
        let store = GroupStore::open(&data_dir.join("groups"))?;
        let known = store
            .groups()
            .into_iter()
            .map(|(g, r)| (g, r.generation, r.protocol_type));
        Ok(Groups {
            coordinator: Coordinator::new(known),
            consumer: Mutex::new(ConsumerGroups::new(
                consumer_session_timeout,
                consumer_heartbeat_interval,
            )),
            store: Arc::new(store),
        })
    }

    /// Persist completed generations off the async threads. Losing one is harmless (members of a
    /// crashed broker rejoin anyway); it only keeps generation numbers increasing across restarts.
    pub fn persist_generations(&self, records: Vec<GenerationRecord>) {
        if records.is_empty() {
            return;
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            for (group, generation, protocol_type) in records {
                if let Err(e) = store.generation(&group, generation, protocol_type) {
                    tracing::warn!(%group, error = %e, "cannot persist group generation");
                }
            }
        });
    }

    /// A classic JoinGroup: refused for a consumer group with members, which an empty one
    /// converts to a classic group first.
    pub fn join(
        &self,
        req: JoinRequest,
        now: Instant,
    ) -> (oneshot::Receiver<JoinOutcome>, Vec<GenerationRecord>) {
        let mut consumer = self.consumer.lock();
        if consumer.kind(&req.group) == Some(true) {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(JoinOutcome {
                error: Some(GroupError::InconsistentGroupProtocol),
                generation: -1,
                member_id: req.member_id,
                ..Default::default()
            });
            return (rx, Vec::new());
        }
        if consumer.remove_empty(&req.group) {
            tracing::info!(group = %req.group, "empty consumer group converted to a classic group");
        }
        self.coordinator.join(req, now)
    }

    /// A ConsumerGroupHeartbeat: GROUP_ID_NOT_FOUND for a classic group with members, which an
    /// empty one converts to a consumer group first.
    pub fn heartbeat(
        &self,
        req: Heartbeat,
        topics: &dyn TopicsView,
        now: Instant,
    ) -> Result<HeartbeatOk, HeartbeatError> {
        let mut consumer = self.consumer.lock();
        if consumer.kind(&req.group).is_none() {
            match self.coordinator.kind(&req.group) {
                Some(true) => {
                    let msg = format!("Group {} is not a consumer group.", req.group);
                    return Err((GroupError::GroupIdNotFound, msg));
                }
                Some(false) => {
                    self.coordinator.remove_empty(&req.group);
                    tracing::info!(group = %req.group, "empty classic group converted to a consumer group");
                }
                None => {}
            }
        }
        consumer.heartbeat(req, topics, now)
    }

    /// Whether an OffsetCommit may be applied: the consumer-group rules (member epochs) for a
    /// consumer group, else the classic ones (generations). `epoch_aware`: OffsetCommit v9+ or a
    /// TxnOffsetCommit, which a consumer-protocol member must use.
    pub fn check_commit(
        &self,
        group: &str,
        generation_or_epoch: i32,
        member_id: &str,
        partitions: &[(String, i32)],
        epoch_aware: bool,
    ) -> Result<(), GroupError> {
        if let Some(r) = self.consumer.lock().check_commit(
            group,
            member_id,
            generation_or_epoch,
            partitions,
            epoch_aware,
        ) {
            return r;
        }
        self.coordinator
            .check_commit(group, generation_or_epoch, member_id)
    }

    /// Make a group known after a simple commit, unless it is a consumer group.
    pub fn touch(&self, group: &str) {
        let consumer = self.consumer.lock();
        if consumer.kind(group).is_none() {
            self.coordinator.touch(group);
        }
    }

    /// One tick of the membership clock.
    pub fn tick(&self, topics: &dyn TopicsView) {
        let now = Instant::now();
        self.consumer.lock().tick(topics, now);
        let done = self.coordinator.tick(now);
        self.persist_generations(done);
    }
}

impl TopicsView for ferry_log::Store {
    fn partitions(&self, topic: &str) -> Option<u32> {
        self.topic(topic).map(|t| t.partition_count())
    }

    fn names(&self) -> Vec<String> {
        self.topics().iter().map(|t| t.name().to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn classic_join(group: &str) -> JoinRequest {
        JoinRequest {
            group: group.into(),
            member_id: String::new(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), bytes::Bytes::new())],
        }
    }

    fn consumer_join(group: &str, member: &str, epoch: i32) -> Heartbeat {
        Heartbeat {
            group: group.into(),
            member_id: member.into(),
            member_epoch: epoch,
            rebalance_timeout: Some(Duration::from_secs(10)),
            topic_names: Some(vec!["t".into()]),
            ..Default::default()
        }
    }

    /// Kafka's conversion rules between classic and consumer groups of one id.
    #[test]
    fn a_group_id_is_classic_or_consumer_and_converts_only_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let groups =
            Groups::open(dir.path(), Duration::from_secs(45), Duration::from_secs(5)).unwrap();
        let topics = BTreeMap::from([("t".to_owned(), 2)]);
        let now = Instant::now();

        let (mut rx, _) = groups.join(classic_join("g"), now);
        let classic = rx.try_recv().unwrap();
        assert_eq!(classic.error, None);
        let refused = groups.heartbeat(consumer_join("g", "m", 0), &topics, now);
        assert_eq!(refused.unwrap_err().0, GroupError::GroupIdNotFound);

        // Empty, the classic group converts.
        let (left, _) = groups
            .coordinator
            .leave("g", &[(classic.member_id, None)], now);
        assert_eq!(left, [Ok(())]);
        groups
            .heartbeat(consumer_join("g", "m", 0), &topics, now)
            .unwrap();
        assert!(groups.coordinator.kind("g").is_none());

        // A classic member cannot join the consumer group while it has members...
        let (mut rx, _) = groups.join(classic_join("g"), now);
        assert_eq!(
            rx.try_recv().unwrap().error,
            Some(GroupError::InconsistentGroupProtocol)
        );
        // ...and converts it back once it is empty.
        groups
            .heartbeat(consumer_join("g", "m", consumer::LEAVE_EPOCH), &topics, now)
            .unwrap();
        let (mut rx, _) = groups.join(classic_join("g"), now);
        assert_eq!(rx.try_recv().unwrap().error, None);
        assert_eq!(groups.consumer.lock().kind("g"), None);
    }
}
