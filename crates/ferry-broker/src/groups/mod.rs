//! Consumer groups: the membership state machine ([`coordinator`]) and the durable committed
//! offsets ([`store`]), tied together for the handlers.

pub mod coordinator;
pub mod offsets_topic;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use coordinator::{Coordinator, GenerationRecord, GroupError, JoinRequest};
pub use store::{Committed, GroupStore, StoreError};

/// How often session timeouts and rebalance deadlines are checked.
pub const TICK: Duration = Duration::from_millis(100);

/// Membership plus durable offsets.
#[derive(Debug)]
pub struct Groups {
    /// Membership and rebalances (in memory).
    pub coordinator: Coordinator,
    /// Committed offsets and generations (on disk).
    pub store: Arc<GroupStore>,
}

impl Groups {
    /// Open the store under `<data>/groups` and seed the coordinator with the known groups.
    pub fn open(data_dir: &Path) -> Result<Groups, StoreError> {
        let store = GroupStore::open(&data_dir.join("groups"))?;
        let known = store
            .groups()
            .into_iter()
            .map(|(g, r)| (g, r.generation, r.protocol_type));
        Ok(Groups {
            coordinator: Coordinator::new(known),
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

    /// One tick of the membership clock.
    pub fn tick(&self) {
        let done = self.coordinator.tick(Instant::now());
        self.persist_generations(done);
    }
}
