//! Consumer-protocol groups (KIP-848): ConsumerGroupHeartbeat as a synchronous state machine,
//! with time and the topic metadata passed in.
//!
//! The model is Kafka's `GroupMetadataManager` and `CurrentAssignmentBuilder`:
//!
//! * The **group epoch** goes up whenever what the assignor sees changes: a member joins or
//!   leaves (or is fenced), a subscription changes, or a subscribed topic is created, deleted or
//!   gets partitions (checked on every heartbeat, so new partitions are assigned without anyone
//!   rejoining).
//! * At each new group epoch the broker-side assignor (`assignor.rs`) computes the **target
//!   assignment**; its epoch is the *assignment epoch*.
//! * Each member moves towards its target **epoch by epoch** as it heartbeats: first it is told
//!   to give up the partitions it must lose (state `UNREVOKED_PARTITIONS`, member epoch
//!   unchanged) and only when its heartbeat's owned partitions show they are gone does it take
//!   the new member epoch and the partitions no one else holds; partitions another member still
//!   holds or revokes come later (`UNRELEASED_PARTITIONS`). So a partition is never owned by
//!   two members at once, and a member whose target did not change is never disturbed.
//! * A member must heartbeat within the session timeout (broker-wide, Kafka's
//!   `group.consumer.session.timeout.ms`) and must revoke within its rebalance timeout, or it
//!   is removed (fenced); its partitions go to the others at once.
//! * Epoch checks: a heartbeat with a newer epoch than the member's, or an older one that is not
//!   the member's previous epoch with an unchanged assignment (a lost response), is
//!   FENCED_MEMBER_EPOCH; an unknown member is UNKNOWN_MEMBER_ID. Epoch -1 leaves; a static
//!   member (`group.instance.id`) leaving with epoch -2 keeps its partitions until its session
//!   times out, and a new member with the same instance id takes them over.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::assignor::{ASSIGNORS, Tp};
use super::coordinator::GroupError;
use super::reconcile::{Group, Member, MemberState};

/// Epoch a member sends to leave the group.
pub const LEAVE_EPOCH: i32 = -1;
/// Epoch a static member sends to leave temporarily (keeping its partitions).
pub const LEAVE_STATIC_EPOCH: i32 = -2;

/// The topics the coordinator can see: partition counts by name.
pub trait TopicsView {
    /// Partition count of `topic`, if it exists.
    fn partitions(&self, topic: &str) -> Option<u32>;
    /// Every topic name, for regex subscriptions.
    fn names(&self) -> Vec<String>;
}

impl TopicsView for BTreeMap<String, u32> {
    fn partitions(&self, topic: &str) -> Option<u32> {
        self.get(topic).copied()
    }
    fn names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

/// A ConsumerGroupHeartbeat, with topic ids already resolved to names.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// The group.
    pub group: String,
    /// The member id; empty on a v0 join (the broker makes one).
    pub member_id: String,
    /// 0 to join, -1 to leave, -2 for a static member's temporary leave, else the current epoch.
    pub member_epoch: i32,
    /// `group.instance.id`.
    pub instance_id: Option<String>,
    /// The client's rack.
    pub rack_id: Option<String>,
    /// `None`: unchanged.
    pub rebalance_timeout: Option<Duration>,
    /// `None`: unchanged.
    pub topic_names: Option<Vec<String>>,
    /// `None`: unchanged; `Some("")`: no regex.
    pub topic_regex: Option<String>,
    /// `None`: unchanged.
    pub server_assignor: Option<String>,
    /// The partitions the member owns now; `None`: unchanged.
    pub owned: Option<BTreeSet<Tp>>,
    /// Client id, for describe.
    pub client_id: String,
    /// Client address, for describe.
    pub client_host: String,
}

/// The answer to a successful heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOk {
    /// The member's id (made by the broker on a v0 join).
    pub member_id: String,
    /// The member's epoch after this heartbeat.
    pub member_epoch: i32,
    /// How often to heartbeat.
    pub heartbeat_interval: Duration,
    /// The partitions the member may own now, when they changed (or on a join).
    pub assignment: Option<BTreeSet<Tp>>,
}

/// A heartbeat error with Kafka's message.
pub type HeartbeatError = (GroupError, String);

/// A member as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Rack.
    pub rack_id: Option<String>,
    /// Current member epoch.
    pub member_epoch: i32,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Subscribed topic names.
    pub topic_names: Vec<String>,
    /// Subscribed regex.
    pub topic_regex: Option<String>,
    /// What the member owns now (as far as the coordinator has told it).
    pub assignment: BTreeSet<Tp>,
    /// What it is moving towards.
    pub target: BTreeSet<Tp>,
}

/// A consumer group as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// Empty, Assigning, Reconciling or Stable.
    pub state: &'static str,
    /// Group epoch.
    pub epoch: i32,
    /// Epoch of the target assignment.
    pub assignment_epoch: i32,
    /// The assignor in use.
    pub assignor: String,
    /// Members by id.
    pub members: Vec<MemberDescription>,
}

/// Every consumer-protocol group. Used under one lock (`Groups::consumer`).
#[derive(Debug)]
pub struct ConsumerGroups {
    groups: HashMap<String, Group>,
    /// Kafka's `group.consumer.session.timeout.ms`.
    pub session_timeout: Duration,
    /// Kafka's `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
}

impl ConsumerGroups {
    /// No groups yet.
    pub fn new(session_timeout: Duration, heartbeat_interval: Duration) -> ConsumerGroups {
        ConsumerGroups {
            groups: HashMap::new(),
            session_timeout,
            heartbeat_interval,
        }
    }

    /// Whether `group` is a consumer-protocol group, and whether it has members.
    pub fn kind(&self, group: &str) -> Option<bool> {
        self.groups.get(group).map(|g| !g.members.is_empty())
    }

    /// Drop an empty group (it converts to a classic one). Returns whether it existed.
    pub fn remove_empty(&mut self, group: &str) -> bool {
        if self.groups.get(group).is_some_and(|g| g.members.is_empty()) {
            self.groups.remove(group);
            return true;
        }
        false
    }

    /// Handle a ConsumerGroupHeartbeat. The caller has checked that no classic group with
    /// members has this id.
    pub fn heartbeat(
        &mut self,
        req: Heartbeat,
        topics: &dyn TopicsView,
        now: Instant,
    ) -> Result<HeartbeatOk, HeartbeatError> {
        let invalid = |m: &str| Err((GroupError::InvalidRequest, m.to_owned()));
        if req.group.is_empty() {
            return invalid("GroupId can't be empty.");
        }
        if req.member_epoch < LEAVE_STATIC_EPOCH {
            return invalid("MemberEpoch is invalid.");
        }
        if req.member_epoch != 0 && req.member_id.is_empty() {
            return invalid("MemberId can't be empty.");
        }
        if req.member_epoch == LEAVE_STATIC_EPOCH && req.instance_id.is_none() {
            return invalid("InstanceId can't be null.");
        }
        if let Some(a) = req.server_assignor.as_deref()
            && !a.is_empty()
            && !ASSIGNORS.contains(&a)
        {
            return Err((
                GroupError::UnsupportedAssignor,
                format!(
                    "ServerAssignor {a} is not supported. Supported assignors: uniform, range."
                ),
            ));
        }
        let regex = match req.topic_regex.as_deref() {
            Some(r) if !r.is_empty() => Some(regex_automata::meta::Regex::new(r).map_err(|e| {
                (
                    GroupError::InvalidRegularExpression,
                    format!("SubscribedTopicRegex `{r}` is not a valid regular expression: {e}."),
                )
            })?),
            _ => None,
        };
        if req.member_epoch == 0
            && req.topic_names.is_none()
            && req.topic_regex.as_deref().is_none_or(str::is_empty)
        {
            return invalid(
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
            );
        }

        if matches!(req.member_epoch, LEAVE_EPOCH | LEAVE_STATIC_EPOCH) {
            return self.leave(req, topics);
        }
        let interval = self.heartbeat_interval;
        let group = self
            .groups
            .entry(req.group.clone())
            .or_insert_with(Group::new);
        let member_id = if req.member_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            req.member_id.clone()
        };
        let mut send_assignment = req.member_epoch == 0;
        let mut membership_changed = false;
        if req.member_epoch == 0 {
            // A static member coming back takes over its predecessor's place.
            let predecessor = req.instance_id.as_ref().and_then(|iid| {
                group
                    .members
                    .iter()
                    .find(|(id, m)| **id != member_id && m.instance_id.as_ref() == Some(iid))
                    .map(|(id, m)| (id.clone(), m.epoch))
            });
            let mut took_over = false;
            match predecessor {
                Some((_, epoch)) if epoch != LEAVE_STATIC_EPOCH => {
                    return Err((
                        GroupError::UnreleasedInstanceId,
                        format!(
                            "Static member with instance id {} is still in the group.",
                            req.instance_id.as_deref().unwrap_or_default()
                        ),
                    ));
                }
                Some((old, _)) => {
                    let mut m = group.members.remove(&old).expect("found above");
                    m.epoch = m.previous_epoch;
                    m.last_seen = now;
                    if let Some(t) = group.target.remove(&old) {
                        group.target.insert(member_id.clone(), t);
                    }
                    group.members.insert(member_id.clone(), m);
                    took_over = true;
                    tracing::info!(group = %req.group, member = %member_id, replaced = %old, "static member rejoined");
                }
                None => {}
            }
            if let Some(m) = group.members.get_mut(&member_id) {
                if !took_over {
                    // The member lost its partitions (fenced, or restarted with the same id)
                    // and starts over; its target is unchanged, so no one else moves.
                    m.assigned.clear();
                    m.pending_revocation.clear();
                    m.state = MemberState::Stable;
                    m.previous_epoch = m.epoch;
                    m.epoch = 0;
                }
            } else {
                group.members.insert(
                    member_id.clone(),
                    Member {
                        instance_id: req.instance_id.clone(),
                        rack_id: None,
                        client_id: String::new(),
                        client_host: String::new(),
                        epoch: 0,
                        previous_epoch: 0,
                        state: MemberState::Stable,
                        assigned: BTreeMap::new(),
                        pending_revocation: BTreeSet::new(),
                        topic_names: Vec::new(),
                        topic_regex: None,
                        regex: None,
                        server_assignor: None,
                        rebalance_timeout: Duration::from_secs(300),
                        last_seen: now,
                        revoke_deadline: None,
                    },
                );
                membership_changed = true;
                tracing::info!(group = %req.group, member = %member_id, "member joined");
            }
        } else {
            let Some(m) = group.members.get(&member_id) else {
                return Err((
                    GroupError::UnknownMemberId,
                    format!("Member {member_id} is not a member of group {}.", req.group),
                ));
            };
            let fenced = if req.member_epoch > m.epoch || m.epoch == LEAVE_STATIC_EPOCH {
                true
            } else if req.member_epoch < m.epoch {
                // A lost response: the member still has its previous epoch and assignment.
                req.member_epoch != m.previous_epoch
                    || req
                        .owned
                        .as_ref()
                        .is_some_and(|o| !o.is_subset(&m.assigned_set()))
            } else {
                false
            };
            if fenced {
                let relation = if req.member_epoch > m.epoch {
                    "greater"
                } else {
                    "smaller"
                };
                return Err((
                    GroupError::FencedMemberEpoch,
                    format!(
                        "The consumer group member has a {relation} member epoch ({}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                        req.member_epoch, m.epoch
                    ),
                ));
            }
        }

        // Apply what the member changed.
        let m = group.members.get_mut(&member_id).expect("present");
        m.last_seen = now;
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        if req.rack_id.is_some() {
            m.rack_id = req.rack_id.clone();
        }
        if let Some(t) = req.rebalance_timeout {
            m.rebalance_timeout = t;
        }
        if let Some(mut names) = req.topic_names.clone() {
            names.sort();
            names.dedup();
            if names != m.topic_names {
                m.topic_names = names;
                membership_changed = true;
            }
        }
        if let Some(r) = req.topic_regex.clone() {
            let r = (!r.is_empty()).then_some(r);
            if r != m.topic_regex {
                m.topic_regex = r;
                m.regex = regex;
                membership_changed = true;
            }
        }
        if let Some(a) = req.server_assignor.clone() {
            let a = (!a.is_empty()).then_some(a);
            if a != m.server_assignor {
                m.server_assignor = a;
                membership_changed = true;
            }
        }
        let before = m.assigned_set();
        if membership_changed {
            group.epoch += 1;
        }
        group.refresh(topics);
        group.reconcile(&member_id, req.owned.as_ref(), now);
        let m = &group.members[&member_id];
        let after = m.assigned_set();
        send_assignment |= before != after || req.owned.as_ref().is_some_and(|o| *o != after);
        Ok(HeartbeatOk {
            member_id,
            member_epoch: m.epoch,
            heartbeat_interval: interval,
            assignment: send_assignment.then_some(after),
        })
    }

    fn leave(
        &mut self,
        req: Heartbeat,
        topics: &dyn TopicsView,
    ) -> Result<HeartbeatOk, HeartbeatError> {
        let unknown = || {
            Err((
                GroupError::UnknownMemberId,
                format!(
                    "Member {} is not a member of group {}.",
                    req.member_id, req.group
                ),
            ))
        };
        let Some(group) = self.groups.get_mut(&req.group) else {
            return unknown();
        };
        // A static member may leave by instance id with an id the coordinator has replaced.
        let id = if group.members.contains_key(&req.member_id) {
            req.member_id.clone()
        } else if let Some(iid) = &req.instance_id
            && let Some((id, _)) = group
                .members
                .iter()
                .find(|(_, m)| m.instance_id.as_ref() == Some(iid))
        {
            id.clone()
        } else {
            return unknown();
        };
        if req.member_epoch == LEAVE_STATIC_EPOCH {
            let m = group.members.get_mut(&id).expect("present");
            if m.epoch != LEAVE_STATIC_EPOCH {
                m.previous_epoch = m.epoch;
                m.epoch = LEAVE_STATIC_EPOCH;
            }
            tracing::info!(group = %req.group, member = %id, "static member left temporarily");
        } else {
            group.members.remove(&id);
            group.target.remove(&id);
            group.epoch += 1;
            group.refresh(topics);
            tracing::info!(group = %req.group, member = %id, "member left");
        }
        Ok(HeartbeatOk {
            member_id: req.member_id,
            member_epoch: req.member_epoch,
            heartbeat_interval: self.heartbeat_interval,
            assignment: None,
        })
    }

    /// Remove members past their session timeout or their revocation deadline.
    pub fn tick(&mut self, topics: &dyn TopicsView, now: Instant) {
        let session = self.session_timeout;
        for (group_id, group) in self.groups.iter_mut() {
            let expired: Vec<(String, &'static str)> = group
                .members
                .iter()
                .filter_map(|(id, m)| {
                    if now.saturating_duration_since(m.last_seen) > session {
                        Some((id.clone(), "session timed out"))
                    } else if m.revoke_deadline.is_some_and(|d| now >= d) {
                        Some((id.clone(), "did not revoke within its rebalance timeout"))
                    } else {
                        None
                    }
                })
                .collect();
            if expired.is_empty() {
                continue;
            }
            for (id, why) in expired {
                tracing::info!(group = %group_id, member = %id, "{why}; fencing member");
                group.members.remove(&id);
                group.target.remove(&id);
            }
            group.epoch += 1;
            group.refresh(topics);
        }
    }

    /// OffsetCommit (plain, `transactional` false) or TxnOffsetCommit check for a consumer
    /// group; `None` if `group` is not one. Kafka's `ConsumerGroup.validateOffsetCommit`: a commit
    /// without a member (epoch < 0) is allowed while the group is empty; else the member must
    /// exist, use OffsetCommit v9+ and send its epoch, or an older one under which it already
    /// had every partition it commits.
    pub fn check_commit(
        &self,
        group: &str,
        member_id: &str,
        epoch: i32,
        partitions: &[Tp],
        version_ok: bool,
    ) -> Option<Result<(), GroupError>> {
        let g = self.groups.get(group)?;
        if epoch < 0 && g.members.is_empty() {
            return Some(Ok(()));
        }
        let Some(m) = g.members.get(member_id) else {
            return Some(Err(GroupError::UnknownMemberId));
        };
        if !version_ok {
            return Some(Err(GroupError::UnsupportedVersion));
        }
        if epoch == m.epoch {
            return Some(Ok(()));
        }
        let held_since = |tp: &Tp| m.assigned.get(tp).is_some_and(|&e| e <= epoch);
        if epoch > m.epoch || epoch < 0 || !partitions.iter().all(held_since) {
            return Some(Err(GroupError::StaleMemberEpoch));
        }
        Some(Ok(()))
    }

    /// OffsetFetch v9 check: epoch -1 is an admin fetch; else the member must exist with that
    /// epoch. `None` if `group` is not a consumer group.
    pub fn check_fetch(
        &self,
        group: &str,
        member_id: Option<&str>,
        epoch: i32,
    ) -> Option<Result<(), GroupError>> {
        let g = self.groups.get(group)?;
        if epoch == -1 {
            return Some(Ok(()));
        }
        let Some(m) = member_id.and_then(|id| g.members.get(id)) else {
            return Some(Err(GroupError::UnknownMemberId));
        };
        Some(if m.epoch == epoch {
            Ok(())
        } else {
            Err(GroupError::StaleMemberEpoch)
        })
    }

    /// ConsumerGroupDescribe for one group.
    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        let g = self.groups.get(group)?;
        Some(GroupDescription {
            state: g.state(),
            epoch: g.epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor.clone(),
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    topic_names: m.topic_names.clone(),
                    topic_regex: m.topic_regex.clone(),
                    assignment: m.assigned_set(),
                    target: g.target.get(id).cloned().unwrap_or_default(),
                })
                .collect(),
        })
    }

    /// Every consumer group with its state name, for ListGroups.
    pub fn list(&self) -> Vec<(String, &'static str)> {
        self.groups
            .iter()
            .map(|(id, g)| (id.clone(), g.state()))
            .collect()
    }

    /// DeleteGroups: `None` if not a consumer group; only an empty one can be deleted.
    pub fn delete(&mut self, group: &str) -> Option<Result<(), GroupError>> {
        let g = self.groups.get(group)?;
        if !g.members.is_empty() {
            return Some(Err(GroupError::NonEmptyGroup));
        }
        self.groups.remove(group);
        Some(Ok(()))
    }
}

#[cfg(test)]
#[path = "consumer_tests.rs"]
mod tests;
