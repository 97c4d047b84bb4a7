//! The reconciliation of consumer-protocol groups (KIP-848): a group's epoch, its target
//! assignment, and each member's step-by-step move towards its target (Kafka's
//! `CurrentAssignmentBuilder`). `consumer.rs` drives it from heartbeats and the clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::assignor::{self, ASSIGNORS, MemberSpec, Tp};
use super::consumer::TopicsView;

/// Where a member is in its reconciliation (Kafka's `MemberState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// At its target.
    Stable,
    /// Must give up partitions before it may go on.
    UnrevokedPartitions,
    /// Waits for partitions other members still hold.
    UnreleasedPartitions,
}

/// A member as the coordinator keeps it.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub(super) instance_id: Option<String>,
    pub(super) rack_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) epoch: i32,
    pub(super) previous_epoch: i32,
    pub(super) state: MemberState,
    /// Partitions the member may own, with the member epoch at which each was given.
    pub(super) assigned: BTreeMap<Tp, i32>,
    /// Partitions the member was told to give up and has not confirmed yet.
    pub(super) pending_revocation: BTreeSet<Tp>,
    pub(super) topic_names: Vec<String>,
    pub(super) topic_regex: Option<String>,
    pub(super) regex: Option<regex_automata::meta::Regex>,
    pub(super) server_assignor: Option<String>,
    pub(super) rebalance_timeout: Duration,
    pub(super) last_seen: Instant,
    pub(super) revoke_deadline: Option<Instant>,
}

impl Member {
    pub(super) fn assigned_set(&self) -> BTreeSet<Tp> {
        self.assigned.keys().cloned().collect()
    }

    /// The existing topics this member subscribes to.
    pub(super) fn resolved_topics(
        &self,
        topics: &dyn TopicsView,
        all: &[String],
    ) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .topic_names
            .iter()
            .filter(|t| topics.partitions(t).is_some())
            .cloned()
            .collect();
        if let Some(re) = &self.regex {
            out.extend(
                all.iter()
                    .filter(|t| !crate::state::is_internal_topic(t) && re.is_match(t.as_str()))
                    .cloned(),
            );
        }
        out
    }
}

/// One consumer-protocol group.
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) epoch: i32,
    pub(super) assignment_epoch: i32,
    pub(super) assignor: String,
    /// Partition counts of the subscribed topics at the last assignment.
    pub(super) metadata: BTreeMap<String, u32>,
    pub(super) target: BTreeMap<String, BTreeSet<Tp>>,
    pub(super) members: BTreeMap<String, Member>,
}

impl Group {
    pub(super) fn new() -> Group {
        Group {
            epoch: 0,
            assignment_epoch: 0,
            assignor: ASSIGNORS[0].to_owned(),
            metadata: BTreeMap::new(),
            target: BTreeMap::new(),
            members: BTreeMap::new(),
        }
    }

    /// Kafka's group state names for consumer groups.
    pub(super) fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.state != MemberState::Stable || m.epoch != self.assignment_epoch)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Re-read the subscribed topics' partition counts; bump the epoch if they changed. Then
    /// recompute the target if the epoch is ahead of it.
    pub(super) fn refresh(&mut self, topics: &dyn TopicsView) {
        let all = topics.names();
        let mut resolved: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (id, m) in &self.members {
            let ts = m.resolved_topics(topics, &all);
            for t in &ts {
                if let Some(n) = topics.partitions(t) {
                    metadata.insert(t.clone(), n);
                }
            }
            resolved.insert(id.clone(), ts);
        }
        if metadata != self.metadata {
            self.metadata = metadata;
            self.epoch += 1;
        }
        if self.epoch <= self.assignment_epoch {
            return;
        }
        // The assignor most members ask for (ties: the first in ASSIGNORS); else the default.
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.server_assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        if let Some(best) = ASSIGNORS
            .iter()
            .max_by_key(|a| (votes.get(**a).copied().unwrap_or(0), std::cmp::Reverse(**a)))
            .filter(|a| votes.contains_key(**a))
        {
            self.assignor = (*best).to_owned();
        }
        let empty = BTreeSet::new();
        let specs: BTreeMap<String, MemberSpec<'_>> = resolved
            .iter()
            .map(|(id, ts)| {
                let spec = MemberSpec {
                    topics: ts,
                    previous: self.target.get(id).unwrap_or(&empty),
                };
                (id.clone(), spec)
            })
            .collect();
        self.target = assignor::assign(&self.assignor, &specs, &self.metadata);
        self.assignment_epoch = self.epoch;
    }

    /// Partitions some member other than `except` holds or is still revoking.
    pub(super) fn held_by_others(&self, except: &str) -> BTreeSet<Tp> {
        self.members
            .iter()
            .filter(|(id, _)| *id != except)
            .flat_map(|(_, m)| m.assigned.keys().chain(m.pending_revocation.iter()))
            .cloned()
            .collect()
    }

    /// Move `id` one step towards its target (Kafka's `CurrentAssignmentBuilder`).
    pub(super) fn reconcile(&mut self, id: &str, owned: Option<&BTreeSet<Tp>>, now: Instant) {
        let others = self.held_by_others(id);
        let target = self.target.get(id).cloned().unwrap_or_default();
        let target_epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        match m.state {
            MemberState::UnrevokedPartitions => {
                let revoked = owned.is_some_and(|o| o.is_disjoint(&m.pending_revocation));
                if !revoked {
                    return;
                }
                m.pending_revocation.clear();
                m.revoke_deadline = None;
            }
            MemberState::Stable if m.epoch == target_epoch => return,
            _ => {}
        }
        let revoke: BTreeSet<Tp> = m
            .assigned
            .keys()
            .filter(|tp| !target.contains(*tp))
            .cloned()
            .collect();
        if !revoke.is_empty() {
            for tp in &revoke {
                m.assigned.remove(tp);
            }
            m.pending_revocation = revoke;
            m.state = MemberState::UnrevokedPartitions;
            m.revoke_deadline = Some(now + m.rebalance_timeout);
            return;
        }
        if m.epoch != target_epoch {
            m.previous_epoch = m.epoch;
            m.epoch = target_epoch;
        }
        let mut unreleased = false;
        for tp in target {
            if m.assigned.contains_key(&tp) {
                continue;
            }
            if others.contains(&tp) {
                unreleased = true;
            } else {
                m.assigned.insert(tp, target_epoch);
            }
        }
        m.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
    }
}
