//! The classic consumer-group protocol as a state machine: JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, session expiry and rebalance deadlines.
//!
//! States follow Kafka's: `Empty` (no members; offsets may exist), `PreparingRebalance`
//! (waiting for every member to (re)join), `CompletingRebalance` (joined; waiting for the
//! leader's SyncGroup with the assignment), `Stable`. Assignment is done by the clients (the
//! leader runs range, roundrobin or cooperative-sticky and sends the result in SyncGroup); the
//! coordinator only picks a protocol all members support and relays bytes.
//!
//! A rebalance completes as soon as every known member has sent JoinGroup, or when the largest
//! rebalance timeout of the members runs out; members that did not rejoin by then are removed.
//! A member that sends nothing for its session timeout is removed and the others rebalance.
//! Waiting JoinGroup and SyncGroup calls are parked as oneshot senders and answered when the
//! state machine moves on. Time is passed in (`now`), so the logic is testable without sleeping;
//! the broker calls [`Coordinator::tick`] a few times a second.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Group-level errors, mapped to Kafka error codes by the handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupError {
    /// The member id is not (or no longer) in the group: rejoin with an empty id.
    UnknownMemberId,
    /// The generation is not the group's current one.
    IllegalGeneration,
    /// A rebalance is under way: rejoin.
    RebalanceInProgress,
    /// No protocol in common with the group, or another protocol type.
    InconsistentGroupProtocol,
    /// Session timeout outside the allowed range.
    InvalidSessionTimeout,
    /// The group id is empty.
    InvalidGroupId,
    /// DeleteGroups on a group that has members.
    NonEmptyGroup,
    /// DeleteGroups on a group that does not exist; a consumer-protocol heartbeat to a classic
    /// group with members.
    GroupIdNotFound,
    /// A malformed consumer-protocol heartbeat.
    InvalidRequest,
    /// A `server_assignor` the broker does not have.
    UnsupportedAssignor,
    /// A `subscribed_topic_regex` that does not compile.
    InvalidRegularExpression,
    /// A static member joins while another member with its instance id is still active.
    UnreleasedInstanceId,
    /// The member's epoch is not one the coordinator accepts: abandon partitions and rejoin.
    FencedMemberEpoch,
    /// An offset commit or fetch with an out-of-date member epoch.
    StaleMemberEpoch,
    /// A consumer-protocol member committing with OffsetCommit below v9.
    UnsupportedVersion,
}

/// Group states, named as Kafka names them in DescribeGroups and ListGroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No members.
    Empty,
    /// Waiting for members to join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Everyone has an assignment.
    Stable,
}

impl State {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// What a JoinGroup asks.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// The group.
    pub group: String,
    /// Empty for a new member.
    pub member_id: String,
    /// Static membership id (`group.instance.id`).
    pub instance_id: Option<String>,
    /// The client's id, for DescribeGroups and member ids.
    pub client_id: String,
    /// The client's address, for DescribeGroups.
    pub client_host: String,
    /// Heartbeat deadline.
    pub session_timeout: Duration,
    /// How long a rebalance may wait for this member.
    pub rebalance_timeout: Duration,
    /// "consumer" for Kafka consumers.
    pub protocol_type: String,
    /// Assignor names with their subscription metadata, in preference order.
    pub protocols: Vec<(String, Bytes)>,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, Default)]
pub struct JoinOutcome {
    /// Set when the join failed.
    pub error: Option<GroupError>,
    /// The new generation.
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen assignor.
    pub protocol: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// For the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// The leader need not assign again (KIP-345: a static leader came back to a Stable group
    /// with unchanged metadata); JoinGroup v9 tells it so.
    pub skip_assignment: bool,
}

impl JoinOutcome {
    fn failed(error: GroupError, member_id: String) -> Self {
        JoinOutcome {
            error: Some(error),
            generation: -1,
            member_id,
            ..Default::default()
        }
    }
}

/// The answer to a SyncGroup: this member's assignment.
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    /// The assignment bytes, or why there is none.
    pub result: Result<Bytes, GroupError>,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen assignor.
    pub protocol: Option<String>,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
}

#[derive(Debug)]
struct Group {
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: IndexMap<String, Member>,
    rebalance_deadline: Option<Instant>,
}

impl Group {
    fn new(generation: i32, protocol_type: Option<String>) -> Self {
        Group {
            state: State::Empty,
            generation,
            protocol_type,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            rebalance_deadline: None,
        }
    }
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Subscription metadata for the chosen protocol.
    pub metadata: Bytes,
    /// The member's current assignment.
    pub assignment: Bytes,
}

/// A group as DescribeGroups and ListGroups show it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// Kafka's state name.
    pub state: State,
    /// "consumer" for Kafka consumers.
    pub protocol_type: String,
    /// The chosen assignor.
    pub protocol: String,
    /// The members.
    pub members: Vec<MemberDescription>,
}

/// A completed generation to persist, handed to the caller so no fsync runs under the lock.
pub type GenerationRecord = (String, i32, Option<String>);

/// Every group's membership state. Cheap, synchronous operations under one lock.
#[derive(Debug, Default)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
}

/// Bounds on a member's session timeout, as Kafka's group.min/max.session.timeout.ms.
pub const MIN_SESSION: Duration = Duration::from_millis(1000);
/// See [`MIN_SESSION`].
pub const MAX_SESSION: Duration = Duration::from_secs(30 * 60);

impl Coordinator {
    /// A coordinator that knows the groups from the store (all empty, with their generations).
    pub fn new(known: impl IntoIterator<Item = (String, i32, Option<String>)>) -> Self {
        let groups = known
            .into_iter()
            .map(|(g, generation, pt)| (g, Group::new(generation, pt)))
            .collect();
        Coordinator {
            groups: Mutex::new(groups),
        }
    }

    /// Handle a JoinGroup. The receiver resolves when the rebalance completes (or at once on error).
    pub fn join(
        &self,
        req: JoinRequest,
        now: Instant,
    ) -> (oneshot::Receiver<JoinOutcome>, Vec<GenerationRecord>) {
        let (tx, rx) = oneshot::channel();
        let mut done = Vec::new();
        if req.group.is_empty() {
            let _ = tx.send(JoinOutcome::failed(
                GroupError::InvalidGroupId,
                req.member_id,
            ));
            return (rx, done);
        }
        if req.session_timeout < MIN_SESSION || req.session_timeout > MAX_SESSION {
            let _ = tx.send(JoinOutcome::failed(
                GroupError::InvalidSessionTimeout,
                req.member_id,
            ));
            return (rx, done);
        }
        let mut groups = self.groups.lock();
        let group = groups
            .entry(req.group.clone())
            .or_insert_with(|| Group::new(0, None));

        // Who is joining: a known member, a static member coming back, or a new one.
        let mut returning_static = false;
        let member_id = if req.member_id.is_empty() {
            let static_old = req.instance_id.as_ref().and_then(|iid| {
                group
                    .members
                    .iter()
                    .find(|(_, m)| m.instance_id.as_ref() == Some(iid))
                    .map(|(id, _)| id.clone())
            });
            let new_id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if let Some(old) = static_old {
                // The same static member restarted: it takes over its old slot under a new id.
                let (_, mut m) = group.members.shift_remove_entry(&old).expect("found above");
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(JoinOutcome::failed(
                        GroupError::UnknownMemberId,
                        old.clone(),
                    ));
                }
                if group.leader.as_deref() == Some(&old) {
                    group.leader = Some(new_id.clone());
                }
                group.members.insert(new_id.clone(), m);
                returning_static = true;
            }
            new_id
        } else if group.members.contains_key(&req.member_id) {
            req.member_id.clone()
        } else {
            let _ = tx.send(JoinOutcome::failed(
                GroupError::UnknownMemberId,
                req.member_id,
            ));
            return (rx, done);
        };

        // The protocol type must match and some assignor must be supported by everyone.
        let others_ok = group
            .members
            .iter()
            .filter(|(id, _)| **id != member_id)
            .all(|(_, m)| {
                m.protocols
                    .iter()
                    .any(|(name, _)| req.protocols.iter().any(|(n, _)| n == name))
            });
        let type_ok = group.members.is_empty()
            || group
                .protocol_type
                .as_deref()
                .is_none_or(|t| t == req.protocol_type);
        if req.protocols.is_empty() || !others_ok || !type_ok {
            // A known member keeps its place (and its old protocols); a new one is not added.
            let _ = tx.send(JoinOutcome::failed(
                GroupError::InconsistentGroupProtocol,
                member_id,
            ));
            return (rx, done);
        }

        // As Kafka's GroupCoordinator: a member already in the current generation whose
        // subscription did not change gets the current generation back at once, instead of
        // making everyone rebalance. Only the leader's plain rejoin of a Stable group still
        // rebalances: that is how a leader asks for one (it saw topic metadata change).
        if matches!(group.state, State::Stable | State::CompletingRebalance)
            && type_ok
            && let Some(member) = group.members.get_mut(&member_id)
            && member.protocols == req.protocols
        {
            let is_leader = group.leader.as_deref() == Some(member_id.as_str());
            let leader_asks = is_leader && !returning_static && group.state == State::Stable;
            if !leader_asks {
                member.session_timeout = req.session_timeout;
                member.rebalance_timeout = req.rebalance_timeout;
                member.last_seen = now;
                let chosen = group.protocol.clone().unwrap_or_default();
                let _ = tx.send(JoinOutcome {
                    error: None,
                    generation: group.generation,
                    protocol_type: group.protocol_type.clone(),
                    protocol: group.protocol.clone(),
                    leader: group.leader.clone().unwrap_or_default(),
                    member_id: member_id.clone(),
                    members: if is_leader {
                        member_metadata(group, &chosen)
                    } else {
                        Vec::new()
                    },
                    skip_assignment: is_leader && group.state == State::Stable,
                });
                return (rx, done);
            }
        }

        let member = group
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_seen: now,
                join_waiter: None,
                sync_waiter: None,
            });
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.protocols = req.protocols;
        member.instance_id = req.instance_id;
        member.last_seen = now;
        if let Some(old) = member.join_waiter.replace(tx) {
            // A duplicate JoinGroup from the same member: the newer one wins.
            let _ = old.send(JoinOutcome::failed(
                GroupError::RebalanceInProgress,
                member_id.clone(),
            ));
        }
        group.protocol_type = Some(req.protocol_type);

        if group.state != State::PreparingRebalance {
            prepare_rebalance(group, now);
        }
        if let Some(rec) = maybe_complete(&req.group, group, now, false) {
            done.push(rec);
        }
        (rx, done)
    }

    /// Handle a SyncGroup. The receiver resolves when the leader has sent the assignment.
    pub fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> oneshot::Receiver<SyncOutcome> {
        let (tx, rx) = oneshot::channel();
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            let _ = tx.send(SyncOutcome {
                result: Err(GroupError::UnknownMemberId),
                protocol_type: None,
                protocol: None,
            });
            return rx;
        };
        let reply = |g: &Group, result| SyncOutcome {
            result,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
        };
        let Some(member) = group.members.get_mut(member_id) else {
            let _ = tx.send(reply(group, Err(GroupError::UnknownMemberId)));
            return rx;
        };
        member.last_seen = now;
        if generation != group.generation {
            let _ = tx.send(reply(group, Err(GroupError::IllegalGeneration)));
            return rx;
        }
        match group.state {
            State::Empty | State::PreparingRebalance => {
                let _ = tx.send(reply(group, Err(GroupError::RebalanceInProgress)));
            }
            State::Stable => {
                let assignment = member.assignment.clone();
                let _ = tx.send(reply(group, Ok(assignment)));
            }
            State::CompletingRebalance => {
                member.sync_waiter = Some(tx);
                if group.leader.as_deref() == Some(member_id) {
                    let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, m) in group.members.iter_mut() {
                        m.assignment = assignments.remove(id).unwrap_or_default();
                    }
                    group.state = State::Stable;
                    let (pt, proto) = (group.protocol_type.clone(), group.protocol.clone());
                    for m in group.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncOutcome {
                                result: Ok(m.assignment.clone()),
                                protocol_type: pt.clone(),
                                protocol: proto.clone(),
                            });
                        }
                    }
                }
            }
        }
        rx
    }

    /// Handle a Heartbeat.
    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        now: Instant,
    ) -> Result<(), GroupError> {
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        let member = group
            .members
            .get_mut(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        member.last_seen = now;
        match group.state {
            State::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ if generation != group.generation => Err(GroupError::IllegalGeneration),
            _ => Ok(()),
        }
    }

    /// Handle a LeaveGroup for each (member id, instance id); one result per member.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now: Instant,
    ) -> (Vec<Result<(), GroupError>>, Vec<GenerationRecord>) {
        let mut groups = self.groups.lock();
        let mut done = Vec::new();
        let Some(group) = groups.get_mut(group_id) else {
            return (
                members
                    .iter()
                    .map(|_| Err(GroupError::UnknownMemberId))
                    .collect(),
                done,
            );
        };
        let mut results = Vec::with_capacity(members.len());
        let mut removed_any = false;
        for (member_id, instance_id) in members {
            let id = if member_id.is_empty() {
                instance_id.as_ref().and_then(|iid| {
                    group
                        .members
                        .iter()
                        .find(|(_, m)| m.instance_id.as_ref() == Some(iid))
                        .map(|(id, _)| id.clone())
                })
            } else {
                group
                    .members
                    .contains_key(member_id)
                    .then(|| member_id.clone())
            };
            match id {
                Some(id) => {
                    remove_member(group, &id);
                    removed_any = true;
                    results.push(Ok(()));
                }
                None => results.push(Err(GroupError::UnknownMemberId)),
            }
        }
        if removed_any {
            tracing::info!(
                group = group_id,
                members = group.members.len(),
                "member left; rebalancing"
            );
            if group.state != State::PreparingRebalance {
                prepare_rebalance(group, now);
            }
            done.extend(maybe_complete(group_id, group, now, false));
        }
        (results, done)
    }

    /// Expire silent members and finish rebalances whose deadline passed.
    pub fn tick(&self, now: Instant) -> Vec<GenerationRecord> {
        let mut groups = self.groups.lock();
        let mut done = Vec::new();
        for (group_id, group) in groups.iter_mut() {
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    m.join_waiter.is_none()
                        && now.saturating_duration_since(m.last_seen) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &expired {
                tracing::info!(group = %group_id, member = %id, "session timed out; removing member");
                remove_member(group, id);
            }
            if !expired.is_empty() && group.state != State::PreparingRebalance {
                prepare_rebalance(group, now);
            }
            let deadline_passed = group.rebalance_deadline.is_some_and(|d| now >= d);
            done.extend(maybe_complete(group_id, group, now, deadline_passed));
        }
        done
    }

    /// Whether an OffsetCommit from this member at this generation may be applied.
    /// Generation -1 with no member id is a "simple" commit, allowed while the group has no members.
    pub fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
    ) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let groups = self.groups.lock();
        let Some(group) = groups.get(group_id) else {
            return if generation < 0 {
                Ok(())
            } else {
                Err(GroupError::IllegalGeneration)
            };
        };
        if generation < 0 && member_id.is_empty() {
            return if group.members.is_empty() {
                Ok(())
            } else {
                Err(GroupError::UnknownMemberId)
            };
        }
        if !group.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation != group.generation {
            return Err(GroupError::IllegalGeneration);
        }
        // During PreparingRebalance members may still commit what they processed before rejoining.
        if group.state == State::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Make a group known (a simple commit to a new group id), so it is listed.
    pub fn touch(&self, group_id: &str) {
        self.groups
            .lock()
            .entry(group_id.to_owned())
            .or_insert_with(|| Group::new(0, None));
    }

    /// Whether `group_id` is a known classic group, and whether it has members.
    pub fn kind(&self, group_id: &str) -> Option<bool> {
        self.groups
            .lock()
            .get(group_id)
            .map(|g| !g.members.is_empty())
    }

    /// Drop `group_id` if it has no members (an empty classic group converts to a consumer one).
    pub fn remove_empty(&self, group_id: &str) {
        let mut groups = self.groups.lock();
        if groups.get(group_id).is_some_and(|g| g.members.is_empty()) {
            groups.remove(group_id);
        }
    }

    /// DescribeGroups for one group; `None` if unknown.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.groups.lock();
        let g = groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            protocol,
        })
    }

    /// Every group id with its protocol type and state, sorted by id.
    pub fn list(&self) -> Vec<(String, String, State)> {
        let groups = self.groups.lock();
        let mut v: Vec<_> = groups
            .iter()
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// DeleteGroups: only an empty group can be deleted.
    pub fn delete(&self, group_id: &str) -> Result<(), GroupError> {
        let mut groups = self.groups.lock();
        match groups.get(group_id) {
            None => Err(GroupError::GroupIdNotFound),
            Some(g) if !g.members.is_empty() => Err(GroupError::NonEmptyGroup),
            Some(_) => {
                groups.remove(group_id);
                Ok(())
            }
        }
    }
}

fn prepare_rebalance(group: &mut Group, now: Instant) {
    group.state = State::PreparingRebalance;
    let timeout = group
        .members
        .values()
        .map(|m| m.rebalance_timeout)
        .max()
        .unwrap_or_default();
    group.rebalance_deadline = Some(now + timeout);
    // Members waiting for an assignment of the old generation must rejoin.
    for m in group.members.values_mut() {
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncOutcome {
                result: Err(GroupError::RebalanceInProgress),
                protocol_type: None,
                protocol: None,
            });
        }
    }
}

fn remove_member(group: &mut Group, id: &str) {
    if let Some(mut m) = group.members.shift_remove(id) {
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinOutcome::failed(
                GroupError::UnknownMemberId,
                id.to_owned(),
            ));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncOutcome {
                result: Err(GroupError::UnknownMemberId),
                protocol_type: None,
                protocol: None,
            });
        }
    }
    if group.leader.as_deref() == Some(id) {
        group.leader = None;
    }
}

/// Finish the rebalance if every member has rejoined, or if `force` (the deadline passed), in
/// which case members that did not rejoin are dropped.
fn maybe_complete(
    group_id: &str,
    group: &mut Group,
    now: Instant,
    force: bool,
) -> Option<GenerationRecord> {
    if group.state != State::PreparingRebalance {
        return None;
    }
    let all_joined = group.members.values().all(|m| m.join_waiter.is_some());
    if !all_joined && !force {
        return None;
    }
    let absent: Vec<String> = group
        .members
        .iter()
        .filter(|(_, m)| m.join_waiter.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    for id in &absent {
        tracing::info!(group = group_id, member = %id, "did not rejoin in time; removing member");
        remove_member(group, id);
    }
    group.generation += 1;
    group.rebalance_deadline = None;
    if group.members.is_empty() {
        group.state = State::Empty;
        group.protocol = None;
        group.leader = None;
        return Some((
            group_id.to_owned(),
            group.generation,
            group.protocol_type.clone(),
        ));
    }
    // The assignor: among those every member supports, the one most members prefer most.
    let mut votes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let first = group.members.values().next().expect("non-empty");
    for (rank, (name, _)) in first.protocols.iter().enumerate() {
        if group
            .members
            .values()
            .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        {
            votes.insert(name.as_str(), (0, rank));
        }
    }
    for m in group.members.values() {
        if let Some((name, _)) = m
            .protocols
            .iter()
            .find(|(n, _)| votes.contains_key(n.as_str()))
        {
            votes.get_mut(name.as_str()).expect("candidate").0 += 1;
        }
    }
    let protocol = votes
        .iter()
        .max_by(|a, b| a.1.0.cmp(&b.1.0).then(b.1.1.cmp(&a.1.1)))
        .map(|(n, _)| (*n).to_owned());
    group.protocol = protocol.clone();
    if group
        .leader
        .as_ref()
        .is_none_or(|l| !group.members.contains_key(l))
    {
        group.leader = group.members.keys().next().cloned();
    }
    let leader = group.leader.clone().unwrap_or_default();
    let chosen = protocol.clone().unwrap_or_default();
    let everyone = member_metadata(group, &chosen);
    group.state = State::CompletingRebalance;
    for (id, m) in group.members.iter_mut() {
        m.assignment = Bytes::new();
        m.last_seen = now;
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinOutcome {
                error: None,
                generation: group.generation,
                protocol_type: group.protocol_type.clone(),
                protocol: protocol.clone(),
                leader: leader.clone(),
                member_id: id.clone(),
                members: if *id == leader {
                    everyone.clone()
                } else {
                    Vec::new()
                },
                skip_assignment: false,
            });
        }
    }
    tracing::info!(group = group_id, generation = group.generation, members = group.members.len(), protocol = ?protocol, "rebalance complete");
    Some((
        group_id.to_owned(),
        group.generation,
        group.protocol_type.clone(),
    ))
}

/// Every member with its instance id and its metadata for the `chosen` protocol, as the leader
/// gets them in its JoinGroup answer.
fn member_metadata(group: &Group, chosen: &str) -> Vec<(String, Option<String>, Bytes)> {
    group
        .members
        .iter()
        .map(|(id, m)| {
            let meta = m
                .protocols
                .iter()
                .find(|(n, _)| n == chosen)
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            (id.clone(), m.instance_id.clone(), meta)
        })
        .collect()
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
