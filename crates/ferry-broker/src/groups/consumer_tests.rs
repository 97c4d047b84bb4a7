//! Unit tests of the consumer-protocol state machine, with time and topics passed in.
use super::*;

const S: Duration = Duration::from_secs(45);

fn topics(n: u32) -> BTreeMap<String, u32> {
    BTreeMap::from([("t".to_owned(), n)])
}

fn groups() -> ConsumerGroups {
    ConsumerGroups::new(S, Duration::from_secs(5))
}

fn join(member: &str) -> Heartbeat {
    Heartbeat {
        group: "g".into(),
        member_id: member.into(),
        member_epoch: 0,
        rebalance_timeout: Some(Duration::from_secs(10)),
        topic_names: Some(vec!["t".into()]),
        owned: Some(BTreeSet::new()),
        ..Default::default()
    }
}

fn beat(member: &str, epoch: i32, owned: &BTreeSet<Tp>) -> Heartbeat {
    Heartbeat {
        group: "g".into(),
        member_id: member.into(),
        member_epoch: epoch,
        owned: Some(owned.clone()),
        ..Default::default()
    }
}

/// A member as a client sees it: its epoch and what it owns.
#[derive(Debug, Clone)]
struct Client {
    id: String,
    epoch: i32,
    owned: BTreeSet<Tp>,
    revoked: usize,
}

impl Client {
    #[track_caller]
    fn join(g: &mut ConsumerGroups, id: &str, t: &BTreeMap<String, u32>, now: Instant) -> Client {
        let ok = g.heartbeat(join(id), t, now).expect("join");
        Client {
            id: id.into(),
            epoch: ok.member_epoch,
            owned: ok.assignment.expect("a join gets its assignment"),
            revoked: 0,
        }
    }

    /// One heartbeat; applies the assignment as a client does (revoking what is gone).
    #[track_caller]
    fn beat(&mut self, g: &mut ConsumerGroups, t: &BTreeMap<String, u32>, now: Instant) {
        let ok = g
            .heartbeat(beat(&self.id, self.epoch, &self.owned), t, now)
            .expect("heartbeat");
        self.epoch = ok.member_epoch;
        if let Some(a) = ok.assignment {
            self.revoked += self.owned.difference(&a).count();
            self.owned = a;
        }
    }
}

/// Heartbeat every client until nothing changes; check no partition is owned twice on the way.
#[track_caller]
fn settle(g: &mut ConsumerGroups, clients: &mut [Client], t: &BTreeMap<String, u32>, now: Instant) {
    for _ in 0..10 {
        for i in 0..clients.len() {
            clients[i].beat(g, t, now);
            let mut seen = BTreeSet::new();
            for c in clients.iter() {
                for tp in &c.owned {
                    assert!(seen.insert(tp.clone()), "{tp:?} owned twice: {clients:?}");
                }
            }
        }
    }
    assert_eq!(g.describe("g").unwrap().state, "Stable");
}

#[test]
fn three_members_on_six_partitions_get_two_each_and_a_fourth_takes_one() {
    let (mut g, t, now) = (groups(), topics(6), Instant::now());
    let mut cs: Vec<Client> = ["a", "b", "c"]
        .iter()
        .map(|id| Client::join(&mut g, id, &t, now))
        .collect();
    settle(&mut g, &mut cs, &t, now);
    assert!(cs.iter().all(|c| c.owned.len() == 2), "{cs:?}");
    assert_eq!(cs.iter().map(|c| c.owned.len()).sum::<usize>(), 6);
    let revoked_before: usize = cs.iter().map(|c| c.revoked).sum();

    cs.push(Client::join(&mut g, "d", &t, now));
    settle(&mut g, &mut cs, &t, now);
    let revoked: usize = cs.iter().map(|c| c.revoked).sum::<usize>() - revoked_before;
    // 2, 2, 1, 1: one partition moves to d, nothing else.
    assert_eq!(revoked, 1, "only the partition d needs moves: {cs:?}");
    assert_eq!(cs[3].owned.len(), 1);
    assert_eq!(cs.iter().map(|c| c.owned.len()).sum::<usize>(), 6);
}

#[test]
fn new_partitions_are_assigned_at_the_next_heartbeat() {
    let (mut g, now) = (groups(), Instant::now());
    let mut cs = vec![
        Client::join(&mut g, "a", &topics(2), now),
        Client::join(&mut g, "b", &topics(2), now),
    ];
    settle(&mut g, &mut cs, &topics(2), now);
    let before: Vec<_> = cs.iter().map(|c| c.revoked).collect();
    settle(&mut g, &mut cs, &topics(4), now);
    assert_eq!(cs.iter().map(|c| c.owned.len()).collect::<Vec<_>>(), [2, 2]);
    assert_eq!(cs.iter().map(|c| c.revoked).collect::<Vec<_>>(), before);
}

#[test]
fn epochs_are_fenced_and_unknown_members_rejected() {
    let (mut g, t, now) = (groups(), topics(2), Instant::now());
    let a = Client::join(&mut g, "a", &t, now);
    let err = |r: Result<HeartbeatOk, HeartbeatError>| r.unwrap_err().0;
    assert_eq!(
        err(g.heartbeat(beat("a", a.epoch + 1, &a.owned), &t, now)),
        GroupError::FencedMemberEpoch
    );
    assert_eq!(
        err(g.heartbeat(beat("zz", 1, &BTreeSet::new()), &t, now)),
        GroupError::UnknownMemberId
    );
    // A fenced member rejoins with epoch 0 under the same id and gets its partitions back.
    let again = Client::join(&mut g, "a", &t, now);
    assert_eq!(again.owned, a.owned);
}

#[test]
fn a_silent_member_is_removed_after_the_session_timeout() {
    let (mut g, t, now) = (groups(), topics(4), Instant::now());
    let mut cs = vec![
        Client::join(&mut g, "a", &t, now),
        Client::join(&mut g, "b", &t, now),
    ];
    settle(&mut g, &mut cs, &t, now);
    let later = now + S / 2;
    cs[0].beat(&mut g, &t, later);
    g.tick(&t, now + S + Duration::from_millis(1));
    assert_eq!(g.describe("g").unwrap().members.len(), 1);
    let mut a = vec![cs[0].clone()];
    settle(&mut g, &mut a, &t, later);
    assert_eq!(a[0].owned.len(), 4);
}

#[test]
fn a_static_member_leaving_with_minus_two_gets_its_partitions_back() {
    let (mut g, t, now) = (groups(), topics(4), Instant::now());
    let mut sa = join("a1");
    sa.instance_id = Some("static-a".into());
    let ok = g.heartbeat(sa, &t, now).unwrap();
    let mut cs = vec![
        Client {
            id: "a1".into(),
            epoch: ok.member_epoch,
            owned: ok.assignment.unwrap(),
            revoked: 0,
        },
        Client::join(&mut g, "b", &t, now),
    ];
    settle(&mut g, &mut cs, &t, now);
    let held = cs[0].owned.clone();
    let mut leave = beat("a1", LEAVE_STATIC_EPOCH, &held);
    leave.instance_id = Some("static-a".into());
    g.heartbeat(leave, &t, now).unwrap();
    // The other member is not disturbed, and the instance comes back under a new member id.
    cs[1].beat(&mut g, &t, now);
    assert_eq!(cs[1].revoked, 0);
    let mut back = join("a2");
    back.instance_id = Some("static-a".into());
    let ok = g.heartbeat(back.clone(), &t, now).unwrap();
    assert_eq!(ok.assignment.unwrap(), held);
    // While it is active, a second process with the same instance id is refused.
    back.member_id = "a3".into();
    assert_eq!(
        g.heartbeat(back, &t, now).unwrap_err().0,
        GroupError::UnreleasedInstanceId
    );
}

#[test]
fn commits_need_the_current_epoch_or_one_under_which_the_partition_was_held() {
    let (mut g, t, now) = (groups(), topics(2), Instant::now());
    let a = Client::join(&mut g, "a", &t, now);
    let tp = vec![("t".to_owned(), 0)];
    assert_eq!(g.check_commit("g", "a", a.epoch, &tp, true), Some(Ok(())));
    assert_eq!(
        g.check_commit("g", "a", a.epoch + 1, &tp, true),
        Some(Err(GroupError::StaleMemberEpoch))
    );
    assert_eq!(
        g.check_commit("g", "a", a.epoch, &tp, false),
        Some(Err(GroupError::UnsupportedVersion))
    );
    assert_eq!(
        g.check_commit("g", "x", 1, &tp, true),
        Some(Err(GroupError::UnknownMemberId))
    );
    assert_eq!(g.check_commit("other", "a", 1, &tp, true), None);
}

#[test]
fn a_regex_subscription_follows_topics_created_later() {
    let (mut g, now) = (groups(), Instant::now());
    let mut t = BTreeMap::from([("orders".to_owned(), 2), ("other".to_owned(), 1)]);
    let mut req = join("a");
    req.topic_names = None;
    req.topic_regex = Some("^ord.*".into());
    let ok = g.heartbeat(req, &t, now).unwrap();
    assert_eq!(ok.assignment.unwrap().len(), 2);
    t.insert("orders-eu".into(), 3);
    t.insert("__consumer_offsets".into(), 50);
    let ok = g
        .heartbeat(beat("a", ok.member_epoch, &BTreeSet::new()), &t, now)
        .unwrap();
    let topics: BTreeSet<String> = ok.assignment.unwrap().into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        topics,
        BTreeSet::from(["orders".to_owned(), "orders-eu".to_owned()])
    );
}

#[test]
fn bad_heartbeats_get_kafkas_errors() {
    let (mut g, t, now) = (groups(), topics(1), Instant::now());
    let mut bad_regex = join("a");
    bad_regex.topic_regex = Some("(".into());
    assert_eq!(
        g.heartbeat(bad_regex, &t, now).unwrap_err().0,
        GroupError::InvalidRegularExpression
    );
    let mut bad_assignor = join("a");
    bad_assignor.server_assignor = Some("sticky".into());
    assert_eq!(
        g.heartbeat(bad_assignor, &t, now).unwrap_err().0,
        GroupError::UnsupportedAssignor
    );
    let mut no_subscription = join("a");
    no_subscription.topic_names = None;
    assert_eq!(
        g.heartbeat(no_subscription, &t, now).unwrap_err().0,
        GroupError::InvalidRequest
    );
    let mut range = join("a");
    range.server_assignor = Some("range".into());
    g.heartbeat(range, &t, now).unwrap();
    assert_eq!(g.describe("g").unwrap().assignor, "range");
}
