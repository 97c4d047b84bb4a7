//! A read-only view of a Kafka cluster for tools and the dashboard: topics with their
//! partitions' offsets, consumer groups with their members and assignments, each group's
//! committed offsets with lag, and the dead-letter topics with their letters still pending.
//!
//! librdkafka's calls block, so every method runs on tokio's blocking pool. librdkafka
//! describes groups with the classic DescribeGroups, which shows a consumer-protocol group
//! (KIP-848) as `Dead` with no members; [`Admin::groups`] describes those with [`super::wire`]
//! (ListGroups v5, ConsumerGroupDescribe).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::{KafkaConfig, LogContext};
use crate::dlq;
use crate::error::{Error, Result};

/// How long one admin round trip may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// Its partitions, by id.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// Messages currently held (sum of end - start over the partitions).
    pub fn messages(&self) -> i64 {
        self.partitions.iter().map(|p| p.end - p.start).sum()
    }
}

/// A partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionInfo {
    /// The partition id.
    pub id: i32,
    /// The first offset still held (the low watermark).
    pub start: i64,
    /// The next offset to be written (the high watermark).
    pub end: i64,
}

/// The classic group protocol (JoinGroup/SyncGroup, client-side assignment).
pub const CLASSIC: &str = "classic";
/// The consumer group protocol of KIP-848 (ConsumerGroupHeartbeat, broker-side assignment).
pub const CONSUMER: &str = "consumer";

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupInfo {
    /// The group id.
    pub name: String,
    /// Classic groups: `Stable`, `PreparingRebalance`, `Empty`, ...; consumer-protocol groups:
    /// `Empty`, `Assigning`, `Reconciling`, `Stable`.
    pub state: String,
    /// The group protocol: [`CLASSIC`] or [`CONSUMER`] (KIP-848).
    pub protocol: String,
    /// The assignor: for a classic group the assignment protocol its members chose (e.g.
    /// `range`), for a consumer-protocol group the broker-side assignor (e.g. `uniform`).
    pub assignor: String,
    /// Consumer-protocol groups: the group epoch, bumped by every membership, subscription or
    /// metadata change. `None` for classic groups.
    pub group_epoch: Option<i32>,
    /// Consumer-protocol groups: the epoch of the target assignment; it lags the group epoch
    /// while the assignor has not caught up. `None` for classic groups.
    pub assignment_epoch: Option<i32>,
    /// Its members.
    pub members: Vec<MemberInfo>,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberInfo {
    /// The member id the coordinator (classic) or the client (consumer protocol) gave it.
    pub id: String,
    /// The client's `client.id`.
    pub client_id: String,
    /// Where it connects from.
    pub host: String,
    /// Static membership's `group.instance.id`, if set (consumer-protocol groups only).
    pub instance_id: Option<String>,
    /// Consumer-protocol groups: the member epoch; equal to the group's assignment epoch once
    /// the member has reconciled. `None` for classic groups.
    pub member_epoch: Option<i32>,
    /// Its partitions, per topic.
    pub assignment: Vec<(String, Vec<i32>)>,
    /// Consumer-protocol groups: the partitions it is moving towards, per topic (equal to
    /// `assignment` once reconciled). `None` for classic groups.
    pub target_assignment: Option<Vec<(String, Vec<i32>)>>,
}

impl GroupInfo {
    /// A consumer-protocol group as ConsumerGroupDescribe shows it.
    fn consumer(name: String, c: super::wire::ConsumerGroup) -> GroupInfo {
        GroupInfo {
            name,
            state: c.state,
            protocol: CONSUMER.to_owned(),
            assignor: c.assignor,
            group_epoch: Some(c.epoch),
            assignment_epoch: Some(c.assignment_epoch),
            members: c
                .members
                .into_iter()
                .map(|m| MemberInfo {
                    id: m.id,
                    client_id: m.client_id,
                    host: m.host,
                    instance_id: m.instance_id,
                    member_epoch: Some(m.epoch),
                    assignment: m.assignment,
                    target_assignment: Some(m.target),
                })
                .collect(),
        }
    }
}

/// A group's position on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset.
    pub committed: i64,
    /// The partition's end.
    pub end: i64,
    /// `end - committed`: messages the group has yet to process.
    pub lag: i64,
}

/// A dead-letter topic and how many of its letters wait for a re-drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterTopic {
    /// `<topic>.dlq`.
    pub topic: String,
    /// The topic its letters came from.
    pub original_topic: String,
    /// Letters it holds, re-driven or not (end − start over its partitions).
    pub held: i64,
    /// Letters not re-driven yet: over its partitions, the end minus the re-drive's committed
    /// offset (see [`super::redrive_group`]), or minus the start where it has none.
    pub pending: i64,
}

/// A read-only admin client; see the module docs.
#[derive(Clone)]
pub struct Admin {
    config: KafkaConfig,
    client: Arc<BaseConsumer<LogContext>>,
    /// librdkafka reads a group's committed offsets only through a client of that group; one
    /// per group is kept, since a client costs threads and connections to create.
    group_clients: Arc<Mutex<HashMap<String, Arc<BaseConsumer<LogContext>>>>>,
}

/// Group clients kept at most; past that the cache starts over (groups come and go).
const MAX_GROUP_CLIENTS: usize = 64;

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("brokers", &self.config.bootstrap_servers)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// An admin client for `config`'s cluster. Connects lazily.
    pub fn new(config: &KafkaConfig) -> Result<Admin> {
        let client = config
            .consumer_config("ferry-admin")
            .create_with_context(LogContext)?;
        Ok(Admin {
            config: config.clone(),
            client: Arc::new(client),
            group_clients: Arc::default(),
        })
    }

    /// Every topic with its partitions' start and end offsets, sorted by name.
    pub async fn topics(&self) -> Result<Vec<TopicInfo>> {
        let client = self.client.clone();
        blocking(move || topics(&client)).await
    }

    /// Every dead-letter topic (a topic named `<topic>.dlq`), sorted by name, with its letters
    /// held and still pending. Pending is counted from the committed offsets of the re-drive's
    /// consumer group, which the broker keeps durably: a run of [`super::redrive`] moves them
    /// once its letters are acknowledged by their topic, so the count falls after a re-drive and
    /// stays right after restarts; a letter that fails again comes back as a new pending one.
    pub async fn dead_letter_topics(&self) -> Result<Vec<DeadLetterTopic>> {
        let topics: Vec<TopicInfo> = self
            .topics()
            .await?
            .into_iter()
            .filter(|t| dlq::original_topic(&t.name).is_ok())
            .collect();
        let clients = topics
            .iter()
            .map(|t| self.group_client(&super::redrive_group(&t.name)))
            .collect::<Result<Vec<_>>>()?;
        blocking(move || {
            let mut out = Vec::with_capacity(topics.len());
            for (topic, client) in topics.into_iter().zip(clients) {
                let mut wanted = TopicPartitionList::new();
                for p in &topic.partitions {
                    wanted.add_partition(&topic.name, p.id);
                }
                let committed = client.committed_offsets(wanted, TIMEOUT)?;
                let pending = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let from = match committed
                            .find_partition(&topic.name, p.id)
                            .map(|e| e.offset())
                        {
                            Some(Offset::Offset(at)) => at.clamp(p.start, p.end),
                            _ => p.start,
                        };
                        p.end - from
                    })
                    .sum();
                out.push(DeadLetterTopic {
                    original_topic: dlq::original_topic(&topic.name)
                        .unwrap_or_default()
                        .to_owned(),
                    held: topic.messages(),
                    pending,
                    topic: topic.name,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Every consumer group with its protocol and members, sorted by name. Classic groups come
    /// from librdkafka; consumer-protocol groups (KIP-848) are found with ListGroups v5 and
    /// described with ConsumerGroupDescribe, with their epochs and each member's epoch,
    /// assignment and target assignment. A broker too old for either lists every group as
    /// classic.
    pub async fn groups(&self) -> Result<Vec<GroupInfo>> {
        let mut groups = self.classic_groups().await?;
        let brokers = self.config.bootstrap_servers.as_str();
        let types = match super::wire::group_types(brokers).await {
            Ok(types) => types,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list group types; showing every group as classic");
                Vec::new()
            }
        };
        for (name, kind, state) in types {
            if kind != CONSUMER {
                continue;
            }
            let described = match super::wire::consumer_group(brokers, &name).await {
                Ok(described) => described,
                Err(e) => {
                    tracing::debug!(group = %name, error = %e, "cannot describe a consumer-protocol group");
                    None
                }
            };
            let group = match described {
                Some(c) => GroupInfo::consumer(name.clone(), c),
                // Listed as a consumer group but not described (gone meanwhile, or an error):
                // what ListGroups said.
                None => GroupInfo {
                    name: name.clone(),
                    state,
                    protocol: CONSUMER.to_owned(),
                    assignor: String::new(),
                    group_epoch: None,
                    assignment_epoch: None,
                    members: Vec::new(),
                },
            };
            match groups.iter_mut().find(|g| g.name == name) {
                Some(g) => *g = group,
                None => groups.push(group),
            }
        }
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(groups)
    }

    /// Every group as librdkafka's DescribeGroups shows it: all classic.
    async fn classic_groups(&self) -> Result<Vec<GroupInfo>> {
        let client = self.client.clone();
        blocking(move || {
            let list = client.fetch_group_list(None, TIMEOUT)?;
            let groups: Vec<GroupInfo> = list
                .groups()
                .iter()
                .map(|g| GroupInfo {
                    name: g.name().to_owned(),
                    state: g.state().to_owned(),
                    protocol: CLASSIC.to_owned(),
                    assignor: g.protocol().to_owned(),
                    group_epoch: None,
                    assignment_epoch: None,
                    members: g
                        .members()
                        .iter()
                        .map(|m| MemberInfo {
                            id: m.id().to_owned(),
                            client_id: m.client_id().to_owned(),
                            host: m.client_host().to_owned(),
                            instance_id: None,
                            member_epoch: None,
                            assignment: assignment(m.assignment()),
                            target_assignment: None,
                        })
                        .collect(),
                })
                .collect();
            Ok(groups)
        })
        .await
    }

    /// `group`'s committed offsets with lag, for every partition it has committed on.
    pub async fn group_offsets(&self, group: &str) -> Result<Vec<GroupOffset>> {
        let mut all = self.groups_offsets(&[group.to_owned()]).await?;
        Ok(all.pop().unwrap_or_default())
    }

    /// Each of `groups`' committed offsets with lag, in the same order; the partitions' ends
    /// are read once for all of them.
    pub async fn groups_offsets(&self, groups: &[String]) -> Result<Vec<Vec<GroupOffset>>> {
        let client = self.client.clone();
        let consumers = groups
            .iter()
            .map(|g| self.group_client(g))
            .collect::<Result<Vec<_>>>()?;
        blocking(move || {
            let mut wanted = TopicPartitionList::new();
            let mut ends = HashMap::new();
            for topic in topics(&client)? {
                for p in &topic.partitions {
                    wanted.add_partition(&topic.name, p.id);
                    ends.insert((topic.name.clone(), p.id), p.end);
                }
            }
            let mut all = Vec::with_capacity(consumers.len());
            for consumer in consumers {
                let committed = consumer.committed_offsets(wanted.clone(), TIMEOUT)?;
                let mut offsets = Vec::new();
                for e in committed.elements() {
                    let Offset::Offset(at) = e.offset() else {
                        continue;
                    };
                    let end = ends
                        .get(&(e.topic().to_owned(), e.partition()))
                        .copied()
                        .unwrap_or(at);
                    offsets.push(GroupOffset {
                        topic: e.topic().to_owned(),
                        partition: e.partition(),
                        committed: at,
                        end,
                        lag: (end - at).max(0),
                    });
                }
                all.push(offsets);
            }
            Ok(all)
        })
        .await
    }
}

impl Admin {
    fn group_client(&self, group: &str) -> Result<Arc<BaseConsumer<LogContext>>> {
        let mut clients = self.group_clients.lock();
        if let Some(client) = clients.get(group) {
            return Ok(client.clone());
        }
        if clients.len() >= MAX_GROUP_CLIENTS {
            clients.clear();
        }
        // read_uncommitted: librdkafka's default (read_committed) asks OffsetFetch for stable
        // offsets only, which waits while the group has transactional offsets pending; a view of
        // lag wants the committed offsets as they are.
        let client: Arc<BaseConsumer<LogContext>> = Arc::new(
            self.config
                .consumer_config(group)
                .set("isolation.level", "read_uncommitted")
                .create_with_context(LogContext)?,
        );
        clients.insert(group.to_owned(), client.clone());
        Ok(client)
    }
}

fn topics(client: &BaseConsumer<LogContext>) -> Result<Vec<TopicInfo>> {
    let metadata = client.fetch_metadata(None, TIMEOUT)?;
    let mut topics = Vec::new();
    for t in metadata.topics() {
        let mut partitions = Vec::new();
        for p in t.partitions() {
            let (start, end) = client.fetch_watermarks(t.name(), p.id(), TIMEOUT)?;
            partitions.push(PartitionInfo {
                id: p.id(),
                start,
                end,
            });
        }
        partitions.sort_by_key(|p| p.id);
        topics.push(TopicInfo {
            name: t.name().to_owned(),
            partitions,
        });
    }
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(topics)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

/// The (topic, partitions) of a member's assignment, decoded from the consumer protocol's
/// bytes (a version prefix, then the assignment); empty when there is none or it is not the
/// consumer protocol.
pub fn assignment(bytes: Option<&[u8]>) -> Vec<(String, Vec<i32>)> {
    let Some(bytes) = bytes.filter(|b| b.len() >= 2) else {
        return Vec::new();
    };
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let mut rest = bytes::Bytes::copy_from_slice(&bytes[2..]);
    match ConsumerProtocolAssignment::decode(&mut rest, version.clamp(0, 3)) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
        Err(_) => Vec::new(),
    }
}
