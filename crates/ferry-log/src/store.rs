//! The set of topics in a data directory, with their persisted metadata.
//!
//! Each topic is a directory `topics/<name>/` holding `topic.json` ([`TopicMeta`]: id, partition
//! count, config overrides) and one directory per partition. Topic administration (create, delete,
//! add partitions, alter config) is serialized by one `admin` mutex; lookups go through a `RwLock`ed
//! catalog and never wait for disk I/O.
//!
//! Crash safety comes from renames, which are atomic within a file system:
//! * a new topic is assembled under `tmp/` (metadata and empty partition directories, all fsynced)
//!   and renamed into `topics/` in one step, so after a crash a topic either exists completely or
//!   not at all; `tmp/` is emptied on open;
//! * a deleted topic is first renamed out of `topics/` into `tmp/`, then removed, so a crash
//!   half-way through a recursive delete never leaves a half-deleted topic that looks alive;
//! * `topic.json` is replaced by write-fsync-rename, and new partition directories are created
//!   before the metadata that mentions them.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::LogConfig;
use crate::error::{Error, IoContext, Result};
use crate::partition::{DurableListener, PartitionLog};
use crate::segment::{sync_dir, write_atomically};

const META_FILE: &str = "topic.json";
const MAX_TOPIC_NAME_LEN: usize = 249;
/// Upper bound on partitions per topic, so that one request cannot make the broker create millions
/// of directories and open files.
pub const MAX_PARTITIONS: u32 = 10_000;

/// A topic's persisted metadata (`topic.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: u32,
    /// Config overrides by Kafka name; the effective config is the broker defaults plus these.
    pub overrides: BTreeMap<String, String>,
}

#[derive(Debug)]
struct TopicState {
    overrides: BTreeMap<String, String>,
    config: LogConfig,
    partitions: Vec<Arc<PartitionLog>>,
}

/// A topic and its partition logs.
#[derive(Debug)]
pub struct Topic {
    name: String,
    id: Uuid,
    dir: PathBuf,
    state: RwLock<TopicState>,
}

impl Topic {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn partition_count(&self) -> u32 {
        self.state.read().partitions.len() as u32
    }

    /// The partition with that index (any integer type; negative or too large gives `None`).
    pub fn partition(&self, index: impl TryInto<usize>) -> Option<Arc<PartitionLog>> {
        let index = index.try_into().ok()?;
        self.state.read().partitions.get(index).cloned()
    }

    pub fn partitions(&self) -> Vec<Arc<PartitionLog>> {
        self.state.read().partitions.clone()
    }

    /// The effective config: broker defaults with this topic's overrides applied.
    pub fn config(&self) -> LogConfig {
        self.state.read().config.clone()
    }

    pub fn overrides(&self) -> BTreeMap<String, String> {
        self.state.read().overrides.clone()
    }

    fn meta(&self) -> TopicMeta {
        let state = self.state.read();
        TopicMeta {
            name: self.name.clone(),
            id: self.id,
            partitions: state.partitions.len() as u32,
            overrides: state.overrides.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Catalog {
    by_name: BTreeMap<String, Arc<Topic>>,
    by_id: HashMap<Uuid, Arc<Topic>>,
}

/// All topics of a data directory. `Send + Sync`.
pub struct Store {
    topics_dir: PathBuf,
    tmp_dir: PathBuf,
    /// Broker-wide defaults; replaced at runtime by broker dynamic configs (`set_defaults`).
    defaults: RwLock<LogConfig>,
    listener: DurableListener,
    admin: Mutex<()>,
    catalog: RwLock<Catalog>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("topics_dir", &self.topics_dir)
            .field("topics", &self.catalog.read().by_name.len())
            .finish()
    }
}

impl Store {
    /// Opens the data directory (creating it if missing), loads every topic's metadata and opens
    /// (recovers) its partitions.
    pub fn open(root: &Path, defaults: LogConfig, listener: DurableListener) -> Result<Store> {
        let topics_dir = root.join("topics");
        let tmp_dir = root.join("tmp");
        fs::create_dir_all(&topics_dir).at(&topics_dir)?;
        // Whatever is in tmp/ is a topic that was never finished or one already deleted.
        if tmp_dir.exists() {
            fs::remove_dir_all(&tmp_dir).at(&tmp_dir)?;
        }
        fs::create_dir_all(&tmp_dir).at(&tmp_dir)?;
        let store = Store {
            topics_dir,
            tmp_dir,
            defaults: RwLock::new(defaults),
            listener,
            admin: Mutex::new(()),
            catalog: RwLock::new(Catalog::default()),
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        for entry in fs::read_dir(&store.topics_dir).at(&store.topics_dir)? {
            let entry = entry.at(&store.topics_dir)?;
            if entry.file_type().at(&entry.path())?.is_dir() {
                dirs.push(entry.path());
            }
        }
        dirs.sort();
        let mut catalog = Catalog::default();
        for dir in dirs {
            let meta_path = dir.join(META_FILE);
            if !meta_path.exists() {
                tracing::warn!(dir = %dir.display(), "ignoring topic directory without {META_FILE}");
                continue;
            }
            let meta = read_meta(&meta_path)?;
            if dir.file_name() != Some(meta.name.as_ref()) {
                return Err(Error::CorruptMetadata {
                    path: meta_path,
                    reason: format!("names topic {:?}, not its directory", meta.name),
                });
            }
            let topic = Arc::new(store.open_topic(meta, dir)?);
            catalog.by_id.insert(topic.id, topic.clone());
            catalog.by_name.insert(topic.name.clone(), topic);
        }
        *store.catalog.write() = catalog;
        Ok(store)
    }

    fn open_topic(&self, meta: TopicMeta, dir: PathBuf) -> Result<Topic> {
        let config = self.config_for(&meta.overrides)?;
        let partitions = (0..meta.partitions)
            .map(|p| self.open_partition(&dir, p, &config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Topic {
            name: meta.name,
            id: meta.id,
            dir,
            state: RwLock::new(TopicState {
                overrides: meta.overrides,
                config,
                partitions,
            }),
        })
    }

    fn open_partition(
        &self,
        dir: &Path,
        partition: u32,
        config: &LogConfig,
    ) -> Result<Arc<PartitionLog>> {
        let log = PartitionLog::open(
            &dir.join(partition.to_string()),
            config.clone(),
            self.listener.clone(),
        )?;
        Ok(Arc::new(log))
    }

    fn config_for(&self, overrides: &BTreeMap<String, String>) -> Result<LogConfig> {
        self.config_with(&self.defaults.read(), overrides)
    }

    fn config_with(
        &self,
        defaults: &LogConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<LogConfig> {
        defaults.with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The effective config a topic with these overrides would have, or why they are invalid
    /// (for validate-only requests).
    pub fn validate_overrides(&self, overrides: &BTreeMap<String, String>) -> Result<LogConfig> {
        self.config_for(overrides)
    }

    /// The broker-wide defaults that topic overrides apply to.
    pub fn defaults(&self) -> LogConfig {
        self.defaults.read().clone()
    }

    /// Replaces the broker-wide defaults (a broker dynamic config changed) and applies the result
    /// at once to every topic that does not override the changed configs. Nothing changes if any
    /// topic's config would be invalid.
    pub fn set_defaults(&self, defaults: LogConfig) -> Result<()> {
        let _admin = self.admin.lock();
        let topics = self.topics();
        let configs = topics
            .iter()
            .map(|t| self.config_with(&defaults, &t.overrides()))
            .collect::<Result<Vec<_>>>()?;
        *self.defaults.write() = defaults;
        for (topic, config) in topics.iter().zip(configs) {
            let mut state = topic.state.write();
            for partition in &state.partitions {
                partition.set_config(config.clone());
            }
            state.config = config;
        }
        Ok(())
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.catalog.read().by_name.get(name).cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.catalog.read().by_id.get(&id).cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.catalog.read().by_name.values().cloned().collect()
    }

    /// Kafka's topic name rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, and not `.` or `..`.
    pub fn validate_topic_name(name: &str) -> Result<()> {
        let problem = if name.is_empty() {
            "the empty string is not a topic name".to_owned()
        } else if name.len() > MAX_TOPIC_NAME_LEN {
            format!(
                "{} characters is longer than {MAX_TOPIC_NAME_LEN}",
                name.len()
            )
        } else if name == "." || name == ".." {
            format!("{name:?} is not allowed")
        } else if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            format!(
                "{name:?} contains {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
            )
        } else {
            return Ok(());
        };
        Err(Error::InvalidTopic(problem))
    }

    fn validate_partitions(partitions: u32) -> Result<()> {
        if (1..=MAX_PARTITIONS).contains(&partitions) {
            Ok(())
        } else {
            Err(Error::InvalidPartitions(format!(
                "partition count must be 1..={MAX_PARTITIONS}, got {partitions}"
            )))
        }
    }

    /// Creates a topic. Fails with [`Error::TopicExists`], [`Error::InvalidTopic`],
    /// [`Error::InvalidPartitions`] or [`Error::InvalidConfig`]. Of concurrent creates of one name,
    /// exactly one succeeds.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>> {
        Self::validate_topic_name(name)?;
        Self::validate_partitions(partitions)?;
        self.config_for(&overrides)?;
        let _admin = self.admin.lock();
        if self.topic(name).is_some() {
            return Err(Error::TopicExists(name.to_owned()));
        }
        self.create_locked(name, partitions, overrides)
    }

    /// Returns the topic if it exists, otherwise creates it with default config (auto-creation).
    /// Race-safe: concurrent callers all get the same topic.
    pub fn get_or_create_topic(&self, name: &str, partitions: u32) -> Result<Arc<Topic>> {
        if let Some(topic) = self.topic(name) {
            return Ok(topic);
        }
        Self::validate_topic_name(name)?;
        Self::validate_partitions(partitions)?;
        let _admin = self.admin.lock();
        if let Some(topic) = self.topic(name) {
            return Ok(topic);
        }
        self.create_locked(name, partitions, BTreeMap::new())
    }

    /// Creates a validated, not yet existing topic; the caller holds the admin lock.
    fn create_locked(
        &self,
        name: &str,
        partitions: u32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>> {
        let meta = TopicMeta {
            name: name.to_owned(),
            id: Uuid::new_v4(),
            partitions,
            overrides,
        };
        // Assemble the whole topic in tmp/ and rename it into place: see the module docs.
        let staging = self.tmp_dir.join(meta.id.to_string());
        fs::create_dir(&staging).at(&staging)?;
        for p in 0..partitions {
            let dir = staging.join(p.to_string());
            fs::create_dir(&dir).at(&dir)?;
        }
        write_atomically(&staging.join(META_FILE), &encode_meta(&meta))?;
        sync_dir(&staging)?;
        let dir = self.topics_dir.join(name);
        fs::rename(&staging, &dir).at(&dir)?;
        sync_dir(&self.topics_dir)?;
        let topic = Arc::new(self.open_topic(meta, dir)?);
        let mut catalog = self.catalog.write();
        catalog.by_id.insert(topic.id, topic.clone());
        catalog.by_name.insert(name.to_owned(), topic.clone());
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic and its data. [`Error::UnknownTopic`] if there is none by that name. Holders of
    /// its partition logs can still read what they have, but appends fail with [`Error::Deleted`].
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock();
        let topic = self
            .topic(name)
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))?;
        let graveyard = self.tmp_dir.join(Uuid::new_v4().to_string());
        fs::rename(&topic.dir, &graveyard).at(&topic.dir)?;
        sync_dir(&self.topics_dir)?;
        {
            let mut catalog = self.catalog.write();
            catalog.by_name.remove(name);
            catalog.by_id.remove(&topic.id);
        }
        for partition in topic.partitions() {
            partition.mark_deleted();
        }
        // The topic is already gone; failing to reclaim the space only leaves work for the next open.
        if let Err(e) = fs::remove_dir_all(&graveyard) {
            tracing::warn!(dir = %graveyard.display(), error = %e, "could not remove deleted topic's files");
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Grows a topic to `new_total` partitions. [`Error::InvalidPartitions`] unless it is an increase.
    pub fn create_partitions(&self, name: &str, new_total: u32) -> Result<()> {
        let _admin = self.admin.lock();
        let topic = self
            .topic(name)
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))?;
        let current = topic.partition_count();
        if new_total <= current {
            return Err(Error::InvalidPartitions(format!(
                "topic {name:?} has {current} partitions; the new count {new_total} is not an increase"
            )));
        }
        Self::validate_partitions(new_total)?;
        // Directories first: until the metadata names them they are ignored, so a crash is harmless.
        for p in current..new_total {
            let dir = topic.dir.join(p.to_string());
            fs::create_dir_all(&dir).at(&dir)?;
        }
        sync_dir(&topic.dir)?;
        let mut meta = topic.meta();
        meta.partitions = new_total;
        self.write_meta(&topic.dir, &meta)?;
        let config = topic.config();
        let added = (current..new_total)
            .map(|p| self.open_partition(&topic.dir, p, &config))
            .collect::<Result<Vec<_>>>()?;
        topic.state.write().partitions.extend(added);
        tracing::info!(topic = name, partitions = new_total, "added partitions");
        Ok(())
    }

    /// Replaces a topic's config overrides, persists them and applies them to its partitions.
    pub fn alter_config(&self, name: &str, overrides: BTreeMap<String, String>) -> Result<()> {
        let _admin = self.admin.lock();
        // Under the admin lock, so a concurrent change of the broker defaults is not lost.
        let config = self.config_for(&overrides)?;
        let topic = self
            .topic(name)
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))?;
        let mut meta = topic.meta();
        meta.overrides = overrides.clone();
        self.write_meta(&topic.dir, &meta)?;
        let mut state = topic.state.write();
        for partition in &state.partitions {
            partition.set_config(config.clone());
        }
        state.overrides = overrides;
        state.config = config;
        Ok(())
    }

    fn write_meta(&self, dir: &Path, meta: &TopicMeta) -> Result<()> {
        write_atomically(&dir.join(META_FILE), &encode_meta(meta))?;
        sync_dir(dir)
    }

    /// Applies retention to every partition of every topic; returns the number of segments deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        let mut deleted = 0;
        for topic in self.topics() {
            for partition in topic.partitions() {
                deleted += partition.enforce_retention(now_ms)?;
            }
        }
        Ok(deleted)
    }

    /// fsyncs every partition (shutdown).
    pub fn flush_all(&self) -> Result<()> {
        for topic in self.topics() {
            for partition in topic.partitions() {
                partition.flush()?;
            }
        }
        Ok(())
    }
}

fn encode_meta(meta: &TopicMeta) -> Vec<u8> {
    // Serializing plain strings, numbers and a map cannot fail.
    serde_json::to_vec_pretty(meta).expect("topic metadata serializes")
}

fn read_meta(path: &Path) -> Result<TopicMeta> {
    let bytes = fs::read(path).at(path)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::CorruptMetadata {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
