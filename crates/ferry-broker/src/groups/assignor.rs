//! The broker-side assignors of consumer-protocol groups (KIP-848): `uniform` (the default) and
//! `range`, selected by the members' `server_assignor`.
//!
//! An assignor maps the group's members, each with the topics it subscribes to, onto the
//! partitions of those topics: the *target assignment*. Members then reconcile towards it epoch
//! by epoch (`consumer.rs`). `uniform` is sticky, as Kafka's `UniformAssignor`: a member keeps
//! what it had in the previous target as long as it is still subscribed and the balance allows,
//! so a join or a leave moves only the partitions it must. `range` gives each member contiguous
//! ranges per topic, as Kafka's `RangeAssignor` (co-partitioned topics land on the same member).

use std::collections::{BTreeMap, BTreeSet};

/// A topic partition by topic name.
pub type Tp = (String, i32);

/// Names of the assignors this broker has; the first is the default.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// One member as the assignor sees it.
#[derive(Debug, Clone)]
pub struct MemberSpec<'a> {
    /// Topics the member subscribes to (resolved: names and regex matches that exist).
    pub topics: &'a BTreeSet<String>,
    /// Its partitions in the previous target assignment.
    pub previous: &'a BTreeSet<Tp>,
}

/// Compute a target assignment. `members` is keyed (and so ordered) by member id; `partitions`
/// gives each subscribed topic's partition count. Every partition of a topic someone subscribes
/// to goes to exactly one member subscribed to it.
pub fn assign(
    assignor: &str,
    members: &BTreeMap<String, MemberSpec<'_>>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    match assignor {
        "range" => range(members, partitions),
        _ => uniform(members, partitions),
    }
}

/// Contiguous ranges per topic over the subscribed members in member-id order; the first
/// `count % members` members get one more.
fn range(
    members: &BTreeMap<String, MemberSpec<'_>>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut out: BTreeMap<String, BTreeSet<Tp>> = members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for (topic, &count) in partitions {
        let subscribed: Vec<&String> = members
            .iter()
            .filter(|(_, s)| s.topics.contains(topic))
            .map(|(id, _)| id)
            .collect();
        if subscribed.is_empty() {
            continue;
        }
        let count = count as usize;
        let (each, extra) = (count / subscribed.len(), count % subscribed.len());
        let mut next = 0;
        for (i, id) in subscribed.into_iter().enumerate() {
            let n = each + usize::from(i < extra);
            let set = out.get_mut(id).expect("every member has an entry");
            for p in next..next + n {
                set.insert((topic.clone(), p as i32));
            }
            next += n;
        }
    }
    out
}

/// Balanced and sticky: keep previous partitions that are still valid, give the rest to the
/// least-loaded subscribed member, then move single partitions from the most-loaded member to a
/// subscribed member with at least two fewer until no such move exists.
fn uniform(
    members: &BTreeMap<String, MemberSpec<'_>>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut out: BTreeMap<String, BTreeSet<Tp>> = members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    let exists = |(t, p): &Tp| {
        partitions
            .get(t)
            .is_some_and(|&n| *p >= 0 && (*p as u32) < n)
    };
    let mut taken: BTreeSet<Tp> = BTreeSet::new();
    for (id, spec) in members {
        for tp in spec.previous {
            if exists(tp) && spec.topics.contains(&tp.0) && taken.insert(tp.clone()) {
                out.get_mut(id).expect("entry").insert(tp.clone());
            }
        }
    }
    // Give each unassigned partition to the least-loaded member subscribed to its topic.
    for (topic, &count) in partitions {
        for p in 0..count as i32 {
            let tp = (topic.clone(), p);
            if taken.contains(&tp) {
                continue;
            }
            let best = members
                .iter()
                .filter(|(_, s)| s.topics.contains(topic))
                .map(|(id, _)| id)
                .min_by_key(|id| (out[*id].len(), (*id).clone()));
            if let Some(id) = best {
                out.get_mut(id).expect("entry").insert(tp.clone());
                taken.insert(tp);
            }
        }
    }
    // Balance: each move lowers the spread, so this ends; it moves as little as balance needs.
    loop {
        let mut moved = false;
        let mut by_load: Vec<String> = out.keys().cloned().collect();
        by_load.sort_by_key(|id| (std::cmp::Reverse(out[id].len()), id.clone()));
        'donors: for donor in &by_load {
            let donor_load = out[donor].len();
            // The donor's newest partitions (highest) move first; the oldest stay put.
            let candidates: Vec<Tp> = out[donor].iter().rev().cloned().collect();
            for tp in candidates {
                let receiver = members
                    .iter()
                    .filter(|(id, s)| *id != donor && s.topics.contains(&tp.0))
                    .map(|(id, _)| id)
                    .filter(|id| out[*id].len() + 1 < donor_load)
                    .min_by_key(|id| (out[*id].len(), (*id).clone()))
                    .cloned();
                if let Some(r) = receiver {
                    out.get_mut(donor).expect("entry").remove(&tp);
                    out.get_mut(&r).expect("entry").insert(tp);
                    moved = true;
                    break 'donors;
                }
            }
        }
        if !moved {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn parts(list: &[(&str, i32)]) -> BTreeSet<Tp> {
        list.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect()
    }

    /// Run `assignor` over members (id, subscriptions, previous) and check the result covers
    /// every partition exactly once, only to subscribers.
    #[track_caller]
    fn check(
        assignor: &str,
        members: &[(&str, BTreeSet<String>, BTreeSet<Tp>)],
        counts: &[(&str, u32)],
    ) -> BTreeMap<String, BTreeSet<Tp>> {
        let specs: BTreeMap<String, MemberSpec<'_>> = members
            .iter()
            .map(|(id, t, p)| {
                (
                    (*id).to_owned(),
                    MemberSpec {
                        topics: t,
                        previous: p,
                    },
                )
            })
            .collect();
        let counts: BTreeMap<String, u32> =
            counts.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect();
        let out = assign(assignor, &specs, &counts);
        let mut seen = BTreeSet::new();
        for (id, set) in &out {
            for tp in set {
                assert!(seen.insert(tp.clone()), "{tp:?} assigned twice");
                assert!(
                    specs[id].topics.contains(&tp.0),
                    "{id} not subscribed to {tp:?}"
                );
            }
        }
        for (t, n) in &counts {
            let subscribed = specs.values().any(|s| s.topics.contains(t));
            for p in 0..*n as i32 {
                assert_eq!(seen.contains(&(t.clone(), p)), subscribed, "{t}-{p}");
            }
        }
        out
    }

    #[test]
    fn uniform_three_members_six_partitions_get_two_each() {
        let t = topics(&["a"]);
        let none = BTreeSet::new();
        let out = check(
            "uniform",
            &[
                ("m1", t.clone(), none.clone()),
                ("m2", t.clone(), none.clone()),
                ("m3", t.clone(), none.clone()),
            ],
            &[("a", 6)],
        );
        assert!(out.values().all(|s| s.len() == 2), "{out:?}");
    }

    #[test]
    fn uniform_join_moves_only_what_balance_needs() {
        let t = topics(&["a"]);
        let prev = [
            parts(&[("a", 0), ("a", 1), ("a", 2)]),
            parts(&[("a", 3), ("a", 4), ("a", 5)]),
        ];
        let out = check(
            "uniform",
            &[
                ("m1", t.clone(), prev[0].clone()),
                ("m2", t.clone(), prev[1].clone()),
                ("m3", t.clone(), BTreeSet::new()),
            ],
            &[("a", 6)],
        );
        assert!(out["m1"].is_subset(&prev[0]) && out["m2"].is_subset(&prev[1]));
        assert_eq!(out["m3"].len(), 2);
    }

    #[test]
    fn uniform_leave_keeps_the_survivors_partitions() {
        let t = topics(&["a"]);
        let prev = parts(&[("a", 0), ("a", 1)]);
        let out = check(
            "uniform",
            &[
                ("m1", t.clone(), prev.clone()),
                ("m3", t.clone(), parts(&[("a", 4), ("a", 5)])),
            ],
            &[("a", 6)],
        );
        assert!(prev.is_subset(&out["m1"]));
        assert_eq!((out["m1"].len(), out["m3"].len()), (3, 3));
    }

    #[test]
    fn uniform_new_partitions_go_to_the_least_loaded() {
        let t = topics(&["a"]);
        let out = check(
            "uniform",
            &[
                ("m1", t.clone(), parts(&[("a", 0), ("a", 1)])),
                ("m2", t.clone(), parts(&[("a", 2), ("a", 3)])),
            ],
            &[("a", 6)],
        );
        assert_eq!(out["m1"], parts(&[("a", 0), ("a", 1), ("a", 4)]));
        assert_eq!(out["m2"], parts(&[("a", 2), ("a", 3), ("a", 5)]));
    }

    #[test]
    fn uniform_heterogeneous_subscriptions_only_assign_subscribers() {
        check(
            "uniform",
            &[
                ("m1", topics(&["a", "b"]), BTreeSet::new()),
                ("m2", topics(&["b"]), BTreeSet::new()),
                ("m3", topics(&["c"]), BTreeSet::new()),
            ],
            &[("a", 3), ("b", 4), ("c", 1), ("d", 2)],
        );
    }

    #[test]
    fn range_gives_contiguous_ranges_first_members_get_the_extra() {
        let t = topics(&["a"]);
        let none = BTreeSet::new();
        let out = check(
            "range",
            &[
                ("m1", t.clone(), none.clone()),
                ("m2", t.clone(), none.clone()),
            ],
            &[("a", 5)],
        );
        assert_eq!(out["m1"], parts(&[("a", 0), ("a", 1), ("a", 2)]));
        assert_eq!(out["m2"], parts(&[("a", 3), ("a", 4)]));
    }
}
