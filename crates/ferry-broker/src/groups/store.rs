//! The durable side of consumer groups: committed offsets and each group's last generation.
//!
//! Why a small store of its own and not an internal compacted topic like Kafka's
//! `__consumer_offsets`: ferry-log has no compaction, and the state is small (one entry per
//! group, topic and partition) and read only at start. So it is an append-only file of framed
//! records (`u32 length`, `u32 CRC-32C`, JSON payload), replayed into memory at start and
//! rewritten whole when it has grown to several times the live state. A commit is answered only
//! after its record is fsynced. Recovery stops at the first torn or corrupt frame and truncates
//! there, like the partition logs (the framing is [`crate::journal`]'s).
//!
//! Transactional offset commits (TxnOffsetCommit) are kept per group and producer id as *pending*
//! until the transaction ends: [`GroupStore::end_txn`] makes them committed offsets (commit) or
//! drops them (abort), durably. OffsetFetch with `require_stable` reports a partition with pending
//! offsets as UNSTABLE_OFFSET_COMMIT.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

use super::offsets_topic::{ChangeSender, OffsetChange};

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The next offset the group will read.
    pub offset: i64,
    /// The leader epoch the client saw, echoed back on fetch.
    pub leader_epoch: i32,
    /// Free-form client metadata.
    pub metadata: Option<String>,
}

/// Per group: what survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Last completed generation, so generations keep increasing across restarts.
    pub generation: i32,
    /// "consumer" for Kafka consumers.
    pub protocol_type: Option<String>,
    /// (topic, partition) -> committed offset.
    pub offsets: BTreeMap<(String, i32), Committed>,
    /// Producer id -> offsets its open transaction commits, not visible yet.
    #[serde(skip)]
    pub pending: BTreeMap<i64, BTreeMap<(String, i32), Committed>>,
}

#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Commit {
        group: String,
        offsets: Vec<(String, i32, Committed)>,
    },
    Generation {
        group: String,
        generation: i32,
        protocol_type: Option<String>,
    },
    Delete {
        group: String,
    },
    /// OffsetDelete: forget some partitions' committed offsets.
    DeleteOffsets {
        group: String,
        partitions: Vec<(String, i32)>,
    },
    Snapshot {
        group: String,
        state: SnapshotState,
    },
    TxnOffsets {
        group: String,
        producer_id: i64,
        offsets: Vec<(String, i32, Committed)>,
    },
    TxnEnd {
        group: String,
        producer_id: i64,
        commit: bool,
    },
}

/// One (topic, partition, offset) as records list them.
type OffsetEntry = (String, i32, Committed);

/// A group's state in a compacted file (serde cannot key JSON maps by tuples).
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotState {
    generation: i32,
    protocol_type: Option<String>,
    offsets: Vec<(String, i32, Committed)>,
    /// Pending transactional offsets by producer id.
    #[serde(default)]
    pending: Vec<(i64, Vec<OffsetEntry>)>,
}

/// Why the group store failed.
#[derive(Debug, thiserror::Error)]
#[error("group store {path}: {source}")]
pub struct StoreError {
    path: PathBuf,
    source: std::io::Error,
}

#[derive(Debug)]
struct Inner {
    file: File,
    groups: BTreeMap<String, GroupRecord>,
    records: usize,
}

/// The durable offsets and generations of every group.
#[derive(Debug)]
pub struct GroupStore {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Where changed committed offsets go once durable (the `__consumer_offsets` view).
    mirror: OnceLock<ChangeSender>,
}

const FILE: &str = "groups.log";
/// Rewrite the file when it holds this many times more records than live entries.
const COMPACT_FACTOR: usize = 8;
#[cfg(not(test))]
const COMPACT_MIN_RECORDS: usize = 10_000;
#[cfg(test)]
const COMPACT_MIN_RECORDS: usize = 200;

impl GroupStore {
    /// Open `<dir>/groups.log`, replaying it and truncating a torn tail.
    pub fn open(dir: &Path) -> Result<GroupStore, StoreError> {
        let path = dir.join(FILE);
        let err = |source| StoreError {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(err)?;
        let mut groups = BTreeMap::new();
        let mut pos = 0usize;
        let mut records = 0usize;
        while let Some((record, len)) = parse_frame(&bytes[pos..]) {
            apply(&mut groups, record);
            pos += len;
            records += 1;
        }
        if pos < bytes.len() {
            tracing::warn!(file = %path.display(), position = pos, dropped = bytes.len() - pos, "group store: truncating a torn or corrupt tail");
            file.set_len(pos as u64).map_err(err)?;
            file.sync_all().map_err(err)?;
        }
        Ok(GroupStore {
            path,
            inner: Mutex::new(Inner {
                file,
                groups,
                records,
            }),
            mirror: OnceLock::new(),
        })
    }

    /// Everything known, for rebuilding the coordinator at start.
    pub fn groups(&self) -> BTreeMap<String, GroupRecord> {
        self.inner.lock().groups.clone()
    }

    /// The committed offset of one partition.
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<Committed> {
        self.inner
            .lock()
            .groups
            .get(group)
            .and_then(|g| g.offsets.get(&(topic.to_owned(), partition)).cloned())
    }

    /// Every committed offset of a group.
    pub fn offsets(&self, group: &str) -> BTreeMap<(String, i32), Committed> {
        self.inner
            .lock()
            .groups
            .get(group)
            .map(|g| g.offsets.clone())
            .unwrap_or_default()
    }

    /// Durably record commits; returns after the fsync. Blocking.
    pub fn commit(
        &self,
        group: &str,
        offsets: Vec<(String, i32, Committed)>,
    ) -> Result<(), StoreError> {
        self.append(Record::Commit {
            group: group.to_owned(),
            offsets,
        })
    }

    /// Durably record offsets of an open transaction, pending until it ends. Blocking.
    pub fn txn_offsets(
        &self,
        group: &str,
        producer_id: i64,
        offsets: Vec<(String, i32, Committed)>,
    ) -> Result<(), StoreError> {
        self.append(Record::TxnOffsets {
            group: group.to_owned(),
            producer_id,
            offsets,
        })
    }

    /// Durably settle `producer_id`'s pending offsets in `group`: committed or dropped. Blocking.
    /// Does nothing (and writes nothing) when there are none, so it can be repeated.
    pub fn end_txn(&self, group: &str, producer_id: i64, commit: bool) -> Result<(), StoreError> {
        let has_pending = self
            .inner
            .lock()
            .groups
            .get(group)
            .is_some_and(|g| g.pending.contains_key(&producer_id));
        if !has_pending {
            return Ok(());
        }
        self.append(Record::TxnEnd {
            group: group.to_owned(),
            producer_id,
            commit,
        })
    }

    /// Whether a transaction has offsets pending for this partition.
    pub fn is_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        let key = (topic.to_owned(), partition);
        self.inner
            .lock()
            .groups
            .get(group)
            .is_some_and(|g| g.pending.values().any(|o| o.contains_key(&key)))
    }

    /// Durably record a completed generation. Blocking.
    pub fn generation(
        &self,
        group: &str,
        generation: i32,
        protocol_type: Option<String>,
    ) -> Result<(), StoreError> {
        self.append(Record::Generation {
            group: group.to_owned(),
            generation,
            protocol_type,
        })
    }

    /// Forget a group and its offsets. Blocking.
    pub fn delete(&self, group: &str) -> Result<(), StoreError> {
        self.append(Record::Delete {
            group: group.to_owned(),
        })
    }

    /// Forget the committed offsets of some partitions (OffsetDelete). Blocking.
    pub fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<(), StoreError> {
        self.append(Record::DeleteOffsets {
            group: group.to_owned(),
            partitions,
        })
    }

    /// From now on, hand every change to a committed offset to `mirror`, starting with every
    /// offset committed so far (see [`super::offsets_topic`]).
    pub fn mirror_to(&self, mirror: ChangeSender) {
        let inner = self.inner.lock();
        let all: Vec<OffsetChange> = inner
            .groups
            .iter()
            .flat_map(|(group, g)| {
                g.offsets
                    .iter()
                    .map(|((topic, partition), c)| put(group, topic, *partition, c))
            })
            .collect();
        if !all.is_empty() {
            let _ = mirror.send(all);
        }
        if self.mirror.set(mirror).is_err() {
            tracing::warn!("group store mirrored twice; keeping the first");
        }
    }

    fn append(&self, record: Record) -> Result<(), StoreError> {
        let err = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let frame = frame(&record);
        let mut inner = self.inner.lock();
        inner.file.write_all(&frame).map_err(err)?;
        inner.file.sync_data().map_err(err)?;
        // The view is told under the lock, so it sees changes in the order the file has them.
        if let Some(mirror) = self.mirror.get() {
            let changes = changes(&inner.groups, &record);
            let group = record.group().to_owned();
            apply(&mut inner.groups, record);
            let changes = changes.finish(&group, inner.groups.get(&group));
            if !changes.is_empty() {
                // The receiver is gone only when the broker is stopping.
                let _ = mirror.send(changes);
            }
        } else {
            apply(&mut inner.groups, record);
        }
        inner.records += 1;
        let live: usize = inner
            .groups
            .values()
            .map(|g| g.offsets.len() + g.pending.len() + 1)
            .sum();
        if inner.records >= COMPACT_MIN_RECORDS && inner.records > live * COMPACT_FACTOR {
            self.compact(&mut inner).map_err(err)?;
        }
        Ok(())
    }

    /// Rewrite the file as one snapshot record per group: write a temp file, fsync, rename over.
    fn compact(&self, inner: &mut Inner) -> std::io::Result<()> {
        let tmp = self.path.with_extension("log.tmp");
        let mut out = File::create(&tmp)?;
        for (group, g) in &inner.groups {
            let state = SnapshotState {
                generation: g.generation,
                protocol_type: g.protocol_type.clone(),
                offsets: g
                    .offsets
                    .iter()
                    .map(|((t, p), c)| (t.clone(), *p, c.clone()))
                    .collect(),
                pending: g
                    .pending
                    .iter()
                    .map(|(pid, o)| {
                        let o = o.iter().map(|((t, p), c)| (t.clone(), *p, c.clone()));
                        (*pid, o.collect())
                    })
                    .collect(),
            };
            out.write_all(&frame(&Record::Snapshot {
                group: group.clone(),
                state,
            }))?;
        }
        out.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        inner.file = OpenOptions::new()
            .append(true)
            .read(true)
            .open(&self.path)?;
        inner.records = inner.groups.len();
        Ok(())
    }
}

fn frame(record: &Record) -> Vec<u8> {
    crate::journal::frame(record)
}

fn parse_frame(bytes: &[u8]) -> Option<(Record, usize)> {
    crate::journal::parse_frame(bytes)
}

fn put(group: &str, topic: &str, partition: i32, committed: &Committed) -> OffsetChange {
    OffsetChange {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
        committed: Some(committed.clone()),
    }
}

/// What a record changes in the committed offsets, in two steps around [`apply`].
enum Changes {
    /// A commit: every offset it names, changed or not (Kafka writes a record per commit, and
    /// lag monitors read the commit timestamps).
    Known(Vec<OffsetChange>),
    /// Anything else: the group's offsets before, compared with after.
    Before(BTreeMap<(String, i32), Committed>),
}

fn changes(groups: &BTreeMap<String, GroupRecord>, record: &Record) -> Changes {
    match record {
        Record::Commit { group, offsets } => Changes::Known(
            offsets
                .iter()
                .map(|(topic, partition, c)| put(group, topic, *partition, c))
                .collect(),
        ),
        Record::Generation { .. } | Record::TxnOffsets { .. } => Changes::Known(Vec::new()),
        other => Changes::Before(
            groups
                .get(other.group())
                .map(|g| g.offsets.clone())
                .unwrap_or_default(),
        ),
    }
}

impl Changes {
    fn finish(self, group: &str, after: Option<&GroupRecord>) -> Vec<OffsetChange> {
        let before = match self {
            Changes::Known(changes) => return changes,
            Changes::Before(before) => before,
        };
        let empty = BTreeMap::new();
        let after = after.map_or(&empty, |g| &g.offsets);
        let removed =
            before
                .keys()
                .filter(|k| !after.contains_key(*k))
                .map(|(topic, partition)| OffsetChange {
                    group: group.to_owned(),
                    topic: topic.clone(),
                    partition: *partition,
                    committed: None,
                });
        let set = after
            .iter()
            .filter(|(k, c)| before.get(*k) != Some(*c))
            .map(|((topic, partition), c)| put(group, topic, *partition, c));
        removed.chain(set).collect()
    }
}

impl Record {
    fn group(&self) -> &str {
        match self {
            Record::Commit { group, .. }
            | Record::Generation { group, .. }
            | Record::Delete { group }
            | Record::DeleteOffsets { group, .. }
            | Record::Snapshot { group, .. }
            | Record::TxnOffsets { group, .. }
            | Record::TxnEnd { group, .. } => group,
        }
    }
}

fn apply(groups: &mut BTreeMap<String, GroupRecord>, record: Record) {
    match record {
        Record::Commit { group, offsets } => {
            let g = groups.entry(group).or_default();
            for (topic, partition, committed) in offsets {
                g.offsets.insert((topic, partition), committed);
            }
        }
        Record::Generation {
            group,
            generation,
            protocol_type,
        } => {
            let g = groups.entry(group).or_default();
            g.generation = generation;
            g.protocol_type = protocol_type;
        }
        Record::Delete { group } => {
            groups.remove(&group);
        }
        Record::DeleteOffsets { group, partitions } => {
            if let Some(g) = groups.get_mut(&group) {
                for key in partitions {
                    g.offsets.remove(&key);
                }
            }
        }
        Record::Snapshot { group, state } => {
            let offsets = state
                .offsets
                .into_iter()
                .map(|(t, p, c)| ((t, p), c))
                .collect();
            groups.insert(
                group,
                GroupRecord {
                    generation: state.generation,
                    protocol_type: state.protocol_type,
                    offsets,
                    pending: state
                        .pending
                        .into_iter()
                        .map(|(pid, o)| (pid, o.into_iter().map(|(t, p, c)| ((t, p), c)).collect()))
                        .collect(),
                },
            );
        }
        Record::TxnOffsets {
            group,
            producer_id,
            offsets,
        } => {
            let pending = groups
                .entry(group)
                .or_default()
                .pending
                .entry(producer_id)
                .or_default();
            for (topic, partition, committed) in offsets {
                pending.insert((topic, partition), committed);
            }
        }
        Record::TxnEnd {
            group,
            producer_id,
            commit,
        } => {
            let g = groups.entry(group).or_default();
            if let Some(offsets) = g.pending.remove(&producer_id)
                && commit
            {
                g.offsets.extend(offsets);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(offset: i64) -> Committed {
        Committed {
            offset,
            leader_epoch: 0,
            metadata: None,
        }
    }

    #[test]
    fn commits_survive_reopen_and_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = GroupStore::open(dir.path()).unwrap();
            s.commit("g", vec![("t".into(), 0, c(5)), ("t".into(), 1, c(7))])
                .unwrap();
            s.generation("g", 3, Some("consumer".into())).unwrap();
            s.commit("g", vec![("t".into(), 0, c(9))]).unwrap();
            s.commit("gone", vec![("t".into(), 0, c(1))]).unwrap();
            s.delete("gone").unwrap();
        }
        // A torn write at the tail.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2, 3]).unwrap();
        drop(f);
        let s = GroupStore::open(dir.path()).unwrap();
        assert_eq!(s.committed("g", "t", 0), Some(c(9)));
        assert_eq!(s.committed("g", "t", 1), Some(c(7)));
        assert_eq!(s.groups()["g"].generation, 3);
        assert!(!s.groups().contains_key("gone"));
        s.commit("g", vec![("t".into(), 1, c(8))]).unwrap();
        drop(s);
        assert_eq!(
            GroupStore::open(dir.path()).unwrap().committed("g", "t", 1),
            Some(c(8))
        );
    }

    #[test]
    fn transactional_offsets_show_only_after_commit_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = GroupStore::open(dir.path()).unwrap();
            s.commit("g", vec![("t".into(), 0, c(1))]).unwrap();
            s.txn_offsets("g", 7, vec![("t".into(), 0, c(5))]).unwrap();
            s.txn_offsets("g", 8, vec![("t".into(), 1, c(6))]).unwrap();
            assert_eq!(s.committed("g", "t", 0), Some(c(1)));
            assert!(s.is_pending("g", "t", 0));
            s.end_txn("g", 7, true).unwrap();
            assert_eq!(s.committed("g", "t", 0), Some(c(5)));
            assert!(!s.is_pending("g", "t", 0));
        }
        let s = GroupStore::open(dir.path()).unwrap();
        assert_eq!(s.committed("g", "t", 0), Some(c(5)));
        assert!(
            s.is_pending("g", "t", 1),
            "producer 8's offsets are still pending"
        );
        s.end_txn("g", 8, false).unwrap();
        assert_eq!(s.committed("g", "t", 1), None);
        assert!(!s.is_pending("g", "t", 1));
    }

    #[test]
    fn compaction_keeps_the_live_state() {
        let dir = tempfile::tempdir().unwrap();
        let s = GroupStore::open(dir.path()).unwrap();
        for i in 0..(COMPACT_MIN_RECORDS as i64 + 10) {
            s.commit("g", vec![("t".into(), (i % 3) as i32, c(i))])
                .unwrap();
        }
        let size = fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert!(size < 2_000, "compacted to {size} bytes");
        drop(s);
        let s = GroupStore::open(dir.path()).unwrap();
        let last = COMPACT_MIN_RECORDS as i64 + 9;
        assert_eq!(s.committed("g", "t", (last % 3) as i32), Some(c(last)));
    }
}
