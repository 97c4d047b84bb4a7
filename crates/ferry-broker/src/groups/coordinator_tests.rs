//! Unit tests of the group state machine, with time passed in.
use super::*;

fn join_req(member: &str, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        group: "g".into(),
        member_id: member.into(),
        instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(5),
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| ((*p).to_owned(), Bytes::from_static(b"meta")))
            .collect(),
    }
}

/// Join and expect an immediate answer.
#[track_caller]
fn join_now(c: &Coordinator, req: JoinRequest, now: Instant) -> JoinOutcome {
    let (mut rx, _) = c.join(req, now);
    rx.try_recv().expect("answered at once")
}

#[test]
fn a_lone_member_becomes_leader_and_gets_its_assignment() {
    let c = Coordinator::default();
    let t = Instant::now();
    let out = join_now(&c, join_req("", &["range"]), t);
    assert_eq!(out.error, None);
    assert_eq!(out.generation, 1);
    assert_eq!(out.leader, out.member_id);
    assert_eq!(out.members.len(), 1);
    assert_eq!(out.protocol.as_deref(), Some("range"));
    let mut rx = c.sync(
        "g",
        1,
        &out.member_id,
        vec![(out.member_id.clone(), Bytes::from_static(b"a0"))],
        t,
    );
    assert_eq!(rx.try_recv().unwrap().result, Ok(Bytes::from_static(b"a0")));
    assert_eq!(c.heartbeat("g", 1, &out.member_id, t), Ok(()));
    assert_eq!(
        c.heartbeat("g", 0, &out.member_id, t),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        c.heartbeat("g", 1, "stranger", t),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn a_second_member_triggers_a_rebalance_the_first_learns_from_its_heartbeat() {
    let c = Coordinator::default();
    let t = Instant::now();
    let a = join_now(&c, join_req("", &["range", "roundrobin"]), t);
    let _sync = c.sync("g", 1, &a.member_id, vec![], t);
    let (mut b_rx, _) = c.join(join_req("", &["roundrobin", "range"]), t);
    assert!(b_rx.try_recv().is_err(), "B waits for A to rejoin");
    assert_eq!(
        c.heartbeat("g", 1, &a.member_id, t),
        Err(GroupError::RebalanceInProgress)
    );
    let a2 = join_now(&c, join_req(&a.member_id, &["range", "roundrobin"]), t);
    let b = b_rx.try_recv().unwrap();
    assert_eq!((a2.generation, b.generation), (2, 2));
    assert_eq!(a2.leader, a.member_id, "the leader stays the leader");
    assert_eq!(
        (a2.members.len(), b.members.len()),
        (2, 0),
        "only the leader sees the members"
    );
    // One vote each; the tie goes to the first member's preference.
    assert_eq!(a2.protocol.as_deref(), Some("range"));
    // B syncs before the leader: it waits, then gets its part.
    let mut b_sync = c.sync("g", 2, &b.member_id, vec![], t);
    assert!(b_sync.try_recv().is_err());
    let _sync = c.sync(
        "g",
        2,
        &a.member_id,
        vec![(b.member_id.clone(), Bytes::from_static(b"for-b"))],
        t,
    );
    assert_eq!(
        b_sync.try_recv().unwrap().result,
        Ok(Bytes::from_static(b"for-b"))
    );
}

#[test]
fn a_member_that_does_not_rejoin_by_the_deadline_is_dropped() {
    let c = Coordinator::default();
    let t = Instant::now();
    let a = join_now(&c, join_req("", &["range"]), t);
    let _sync = c.sync("g", 1, &a.member_id, vec![], t);
    let (mut b_rx, _) = c.join(join_req("", &["range"]), t);
    c.tick(t + Duration::from_secs(4));
    assert!(
        b_rx.try_recv().is_err(),
        "still within the 5 s rebalance timeout"
    );
    c.tick(t + Duration::from_secs(6));
    let b = b_rx.try_recv().unwrap();
    assert_eq!(
        (b.generation, b.members.len()),
        (2, 1),
        "B alone, and leader"
    );
    assert_eq!(
        c.heartbeat("g", 2, &a.member_id, t),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn silent_members_expire_and_leaving_empties_the_group() {
    let c = Coordinator::default();
    let t = Instant::now();
    let a = join_now(&c, join_req("", &["range"]), t);
    let _sync = c.sync("g", 1, &a.member_id, vec![], t);
    c.tick(t + Duration::from_secs(9));
    assert_eq!(c.describe("g").unwrap().state, State::Stable);
    c.tick(t + Duration::from_secs(11));
    assert_eq!(
        c.describe("g").unwrap().state,
        State::Empty,
        "expired after the 10 s session"
    );
    assert_eq!(c.delete("g"), Ok(()));
    assert_eq!(c.delete("g"), Err(GroupError::GroupIdNotFound));

    let b = join_now(&c, join_req("", &["range"]), t);
    assert_eq!(c.delete("g"), Err(GroupError::NonEmptyGroup));
    let (results, _) = c.leave("g", &[(b.member_id.clone(), None)], t);
    assert_eq!(results, [Ok(())]);
    assert_eq!(c.describe("g").unwrap().state, State::Empty);
}

#[test]
fn joins_without_a_common_protocol_are_refused() {
    let c = Coordinator::default();
    let t = Instant::now();
    let _a = join_now(&c, join_req("", &["range"]), t);
    let b = join_now(&c, join_req("", &["cooperative-sticky"]), t);
    assert_eq!(b.error, Some(GroupError::InconsistentGroupProtocol));
    let mut bad_session = join_req("", &["range"]);
    bad_session.session_timeout = Duration::from_millis(10);
    assert_eq!(
        join_now(&c, bad_session, t).error,
        Some(GroupError::InvalidSessionTimeout)
    );
}

#[test]
fn commits_are_checked_against_membership() {
    let c = Coordinator::default();
    let t = Instant::now();
    assert_eq!(
        c.check_commit("solo", -1, ""),
        Ok(()),
        "a simple commit to an unknown group"
    );
    let a = join_now(&c, join_req("", &["range"]), t);
    assert_eq!(
        c.check_commit("g", -1, ""),
        Err(GroupError::UnknownMemberId),
        "simple commits need an empty group"
    );
    assert_eq!(
        c.check_commit("g", 1, &a.member_id),
        Err(GroupError::RebalanceInProgress),
        "awaiting sync"
    );
    let _sync = c.sync("g", 1, &a.member_id, vec![], t);
    assert_eq!(c.check_commit("g", 1, &a.member_id), Ok(()));
    assert_eq!(
        c.check_commit("g", 0, &a.member_id),
        Err(GroupError::IllegalGeneration)
    );
}

/// Two members, Stable at generation 2, with assignments "a" and "b". Returns (leader, follower).
fn stable_pair(c: &Coordinator, t: Instant, b_instance: Option<&str>) -> (String, String) {
    let a = join_now(c, join_req("", &["range"]), t);
    drop(c.sync("g", 1, &a.member_id, vec![], t));
    let mut b_req = join_req("", &["range"]);
    b_req.instance_id = b_instance.map(str::to_owned);
    let (mut b_rx, _) = c.join(b_req, t);
    let a2 = join_now(c, join_req(&a.member_id, &["range"]), t);
    let b = b_rx.try_recv().unwrap();
    assert_eq!((a2.generation, b.generation), (2, 2));
    let mut b_sync = c.sync("g", 2, &b.member_id, vec![], t);
    drop(c.sync(
        "g",
        2,
        &a.member_id,
        vec![
            (a.member_id.clone(), Bytes::from_static(b"a")),
            (b.member_id.clone(), Bytes::from_static(b"b")),
        ],
        t,
    ));
    assert_eq!(
        b_sync.try_recv().unwrap().result,
        Ok(Bytes::from_static(b"b"))
    );
    (a.member_id, b.member_id)
}

#[test]
fn known_member_rejoining_unchanged_gets_the_current_generation_without_a_rebalance() {
    let c = Coordinator::default();
    let t = Instant::now();
    let (a, b) = stable_pair(&c, t, None);
    let again = join_now(&c, join_req(&b, &["range"]), t);
    assert_eq!(again.error, None);
    assert_eq!(
        (again.generation, again.member_id.as_str()),
        (2, b.as_str())
    );
    assert_eq!(again.leader, a);
    assert!(again.members.is_empty(), "a follower gets no member list");
    assert_eq!(c.describe("g").unwrap().state, State::Stable);
    assert_eq!(
        c.heartbeat("g", 2, &a, t),
        Ok(()),
        "the leader was not disturbed"
    );
    let mut rx = c.sync("g", 2, &b, vec![], t);
    assert_eq!(rx.try_recv().unwrap().result, Ok(Bytes::from_static(b"b")));
}

#[test]
fn changed_metadata_or_the_leaders_rejoin_still_rebalances() {
    let c = Coordinator::default();
    let t = Instant::now();
    let (a, b) = stable_pair(&c, t, None);
    let mut changed = join_req(&b, &["range"]);
    changed.protocols = vec![("range".into(), Bytes::from_static(b"new topics"))];
    let (mut rx, _) = c.join(changed, t);
    assert!(rx.try_recv().is_err(), "waits for the rebalance");
    assert_eq!(
        c.heartbeat("g", 2, &a, t),
        Err(GroupError::RebalanceInProgress)
    );

    let c = Coordinator::default();
    let (a, _) = stable_pair(&c, t, None);
    let (mut rx, _) = c.join(join_req(&a, &["range"]), t);
    assert!(
        rx.try_recv().is_err(),
        "a leader's rejoin asks for a rebalance"
    );
}

#[test]
fn static_member_coming_back_unchanged_keeps_its_assignment_without_a_rebalance() {
    let c = Coordinator::default();
    let t = Instant::now();
    let (a, b) = stable_pair(&c, t, Some("worker-2"));
    // The process restarted: no member id, the same instance id and subscription.
    let mut back = join_req("", &["range"]);
    back.instance_id = Some("worker-2".into());
    let again = join_now(&c, back, t);
    assert_eq!(again.error, None);
    assert_eq!(again.generation, 2, "no new generation");
    assert_ne!(again.member_id, b, "a new member id replaces the old one");
    assert_eq!(c.heartbeat("g", 2, &a, t), Ok(()), "nobody else rebalances");
    assert_eq!(
        c.heartbeat("g", 2, &b, t),
        Err(GroupError::UnknownMemberId),
        "the old id is fenced"
    );
    let mut rx = c.sync("g", 2, &again.member_id, vec![], t);
    assert_eq!(rx.try_recv().unwrap().result, Ok(Bytes::from_static(b"b")));
}
