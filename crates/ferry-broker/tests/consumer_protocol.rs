//! The consumer group protocol (KIP-848) with real librdkafka consumers (`group.protocol=consumer`):
//! disjoint covering assignments, incremental moves (members that keep their partitions see no
//! revocation, asserted through the rebalance callbacks), new partitions assigned without a
//! rejoin, fencing of a silent member after the session timeout, a static member getting its
//! partitions back, and exactly-once consumption of a numbered stream across all of it.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, GroupId, TopicName,
};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;

use common::wire::{call, s};

const SESSION: Duration = Duration::from_secs(3);

/// What a member's rebalance callbacks saw.
#[derive(Default)]
struct Events {
    /// Every partition revoked (or lost), in order.
    revoked: Mutex<Vec<i32>>,
    /// Every partition assigned, in order.
    assigned: Mutex<Vec<i32>>,
}

struct Ctx(Arc<Events>);

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut r = self.0.revoked.lock().unwrap();
            r.extend(tpl.elements().iter().map(|e| e.partition()));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut a = self.0.assigned.lock().unwrap();
            a.extend(tpl.elements().iter().map(|e| e.partition()));
        }
    }
}

/// A consumer-protocol member polling on its own thread, committing each record synchronously
/// after it is recorded, so a partition that moves resumes exactly after the last record taken.
struct Member {
    stop: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<(i32, i64, u64)>>>,
    assignment: Arc<Mutex<Vec<i32>>>,
    events: Arc<Events>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn start(bootstrap: &str, group: &str, topic: &str, instance_id: Option<&str>) -> Member {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("group.protocol", "consumer")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "100")
            .set("topic.metadata.refresh.interval.ms", "500");
        if let Some(id) = instance_id {
            config.set("group.instance.id", id);
        }
        let events = Arc::new(Events::default());
        let consumer: BaseConsumer<Ctx> = config
            .create_with_context(Ctx(events.clone()))
            .expect("consumer");
        consumer.subscribe(&[topic]).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let assignment = Arc::new(Mutex::new(Vec::new()));
        let (st, g, a) = (stop.clone(), got.clone(), assignment.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => {
                        let n: u64 = std::str::from_utf8(m.payload().unwrap())
                            .unwrap()
                            .parse()
                            .unwrap();
                        g.lock().unwrap().push((m.partition(), m.offset(), n));
                        if let Err(e) = consumer.commit_message(&m, CommitMode::Sync) {
                            panic!("commit of {}-{} failed: {e}", m.partition(), m.offset());
                        }
                    }
                    Some(Err(e)) => eprintln!("consumer error: {e}"),
                    None => {}
                }
                let mut parts: Vec<i32> = consumer
                    .assignment()
                    .map(|t| t.elements().iter().map(|e| e.partition()).collect())
                    .unwrap_or_default();
                parts.sort();
                *a.lock().unwrap() = parts;
            }
            drop(consumer);
        });
        Member {
            stop,
            got,
            assignment,
            events,
            thread: Some(thread),
        }
    }

    fn assignment(&self) -> Vec<i32> {
        self.assignment.lock().unwrap().clone()
    }

    fn revoked(&self) -> usize {
        self.events.revoked.lock().unwrap().len()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The members' assignments are disjoint and cover `0..partitions`, and each has one.
fn covering(members: &[&Member], partitions: i32) -> bool {
    let all: Vec<i32> = members.iter().flat_map(|m| m.assignment()).collect();
    let unique: HashSet<i32> = all.iter().copied().collect();
    all.len() == partitions as usize
        && unique.len() == partitions as usize
        && members.iter().all(|m| !m.assignment().is_empty())
}

fn describe(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| {
            format!(
                "{:?} (revoked {:?})",
                m.assignment(),
                m.events.revoked.lock().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn produce(bootstrap: &str, topic: &str, partitions: i32, from: u64, to: u64) {
    let producer = common::producer(bootstrap, "all");
    let mut pending = Vec::new();
    for i in from..to {
        let value = i.to_string();
        let record = FutureRecord::to(topic)
            .key("k")
            .payload(&value)
            .partition((i % partitions as u64) as i32);
        pending.push(producer.send_result(record).unwrap());
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
}

async fn start_broker(dir: &std::path::Path) -> ferry_broker::BrokerHandle {
    let mut config = common::config(dir);
    config.consumer_session_timeout = SESSION;
    config.consumer_heartbeat_interval = Duration::from_millis(200);
    common::start_with(config).await
}

async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> AdminClient<DefaultClientContext> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap()[0]
        .as_ref()
        .unwrap();
    admin
}

/// Every number in `0..n` consumed exactly once across `members`.
#[track_caller]
fn exactly_once(members: &[&Member], n: u64) {
    let mut seen = BTreeSet::new();
    for m in members {
        for (p, o, v) in m.got.lock().unwrap().iter() {
            assert!(
                seen.insert(*v),
                "{v} (partition {p} offset {o}) consumed twice"
            );
        }
    }
    let missing: Vec<u64> = (0..n).filter(|v| !seen.contains(v)).take(10).collect();
    assert!(missing.is_empty(), "never consumed: {missing:?}…");
    assert_eq!(seen.len() as u64, n);
}

fn consumed(members: &[&Member]) -> usize {
    members.iter().map(|m| m.got.lock().unwrap().len()).sum()
}

/// A member on the raw wire: joins, heartbeats until it holds partitions, then goes silent.
async fn silent_member(bootstrap: &str, group: &str, topic: &str) -> (String, i32, Vec<i32>) {
    let mut conn = tokio::net::TcpStream::connect(bootstrap).await.unwrap();
    let member_id = uuid_like();
    let mut epoch = 0;
    let mut owned: Vec<i32> = Vec::new();
    let mut topic_id = Default::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let mut req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(&member_id))
            .with_member_epoch(epoch)
            .with_topic_partitions(Some(if owned.is_empty() {
                vec![]
            } else {
                vec![
                    TopicPartitions::default()
                        .with_topic_id(topic_id)
                        .with_partitions(owned.clone()),
                ]
            }));
        if epoch == 0 {
            req = req
                .with_rebalance_timeout_ms(10_000)
                .with_subscribed_topic_names(Some(vec![TopicName(s(topic))]));
        }
        let resp: ConsumerGroupHeartbeatResponse =
            call(&mut conn, ApiKey::ConsumerGroupHeartbeat, 1, &req).await;
        assert_eq!(resp.error_code, 0, "{:?}", resp.error_message);
        epoch = resp.member_epoch;
        if let Some(a) = resp.assignment {
            owned = a
                .topic_partitions
                .iter()
                .flat_map(|t| t.partitions.clone())
                .collect();
            if let Some(t) = a.topic_partitions.first() {
                topic_id = t.topic_id;
            }
        }
        if !owned.is_empty() {
            return (member_id, epoch, owned);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the wire member never got a partition");
}

fn uuid_like() -> String {
    format!("wire-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_leaves_move_only_what_they_must_and_every_record_is_consumed_once() {
    const TOPIC: &str = "kip848";
    const GROUP: &str = "g848";
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    let bootstrap = broker.bootstrap_servers();
    let admin = create_topic(&bootstrap, TOPIC, 6).await;

    let a = Member::start(&bootstrap, GROUP, TOPIC, None);
    let b = Member::start(&bootstrap, GROUP, TOPIC, None);
    let c = Member::start(&bootstrap, GROUP, TOPIC, None);
    assert!(
        common::eventually(Duration::from_secs(30), || covering(&[&a, &b, &c], 6)
            && [&a, &b, &c].iter().all(|m| m.assignment().len() == 2))
        .await,
        "three members split six partitions two each: {}",
        describe(&[&a, &b, &c])
    );
    produce(&bootstrap, TOPIC, 6, 0, 300).await;
    assert!(common::eventually(Duration::from_secs(30), || consumed(&[&a, &b, &c]) >= 300).await);

    // D joins: it takes exactly one partition from one member; the two others see no revocation.
    let before: Vec<usize> = [&a, &b, &c].iter().map(|m| m.revoked()).collect();
    let mut d = Member::start(&bootstrap, GROUP, TOPIC, None);
    assert!(
        common::eventually(Duration::from_secs(30), || covering(&[&a, &b, &c, &d], 6)).await,
        "after d joined: {}",
        describe(&[&a, &b, &c, &d])
    );
    let moved: Vec<usize> = [&a, &b, &c]
        .iter()
        .zip(&before)
        .map(|(m, n)| m.revoked() - n)
        .collect();
    assert_eq!(d.assignment().len(), 1);
    assert_eq!(
        moved.iter().sum::<usize>(),
        1,
        "one revocation in all: {moved:?}"
    );
    produce(&bootstrap, TOPIC, 6, 300, 600).await;
    assert!(
        common::eventually(Duration::from_secs(30), || consumed(&[&a, &b, &c, &d])
            >= 600)
        .await
    );

    // D leaves: its partition goes to one of the others; no one else gives anything up.
    let before: Vec<usize> = [&a, &b, &c].iter().map(|m| m.revoked()).collect();
    d.stop();
    assert!(
        common::eventually(Duration::from_secs(30), || covering(&[&a, &b, &c], 6)).await,
        "after d left: {}",
        describe(&[&a, &b, &c])
    );
    let after: Vec<usize> = [&a, &b, &c].iter().map(|m| m.revoked()).collect();
    assert_eq!(before, after, "a leave revokes nothing from the others");

    // Two more partitions: assigned at the members' next heartbeats, without a revocation.
    admin
        .create_partitions(&[NewPartitions::new(TOPIC, 8)], &AdminOptions::new())
        .await
        .unwrap()[0]
        .as_ref()
        .unwrap();
    assert!(
        common::eventually(Duration::from_secs(30), || covering(&[&a, &b, &c], 8)).await,
        "after adding partitions: {}",
        describe(&[&a, &b, &c])
    );
    let after_growth: Vec<usize> = [&a, &b, &c].iter().map(|m| m.revoked()).collect();
    assert_eq!(
        after, after_growth,
        "new partitions come without a rejoin or a revocation"
    );
    produce(&bootstrap, TOPIC, 8, 600, 800).await;
    assert!(
        common::eventually(Duration::from_secs(30), || consumed(&[&a, &b, &c, &d])
            >= 800)
        .await
    );

    // A member that stops heartbeating keeps its partitions for the session timeout, then is
    // fenced: the others get them and a late heartbeat is UNKNOWN_MEMBER_ID.
    let (wire_id, wire_epoch, held) = silent_member(&bootstrap, GROUP, TOPIC).await;
    let silent_since = Instant::now();
    assert!(
        common::eventually(Duration::from_secs(30), || covering(&[&a, &b, &c], 8)).await,
        "after the silent member was fenced: {}",
        describe(&[&a, &b, &c])
    );
    let waited = silent_since.elapsed();
    assert!(
        waited >= SESSION - Duration::from_millis(300),
        "partitions {held:?} moved after {waited:?}, before the {SESSION:?} session timeout"
    );
    let mut conn = tokio::net::TcpStream::connect(&bootstrap).await.unwrap();
    let late: ConsumerGroupHeartbeatResponse = call(
        &mut conn,
        ApiKey::ConsumerGroupHeartbeat,
        1,
        &ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_member_id(s(&wire_id))
            .with_member_epoch(wire_epoch),
    )
    .await;
    assert_eq!(late.error_code, ResponseError::UnknownMemberId.code());

    produce(&bootstrap, TOPIC, 8, 800, 1000).await;
    assert!(
        common::eventually(Duration::from_secs(30), || consumed(&[&a, &b, &c, &d])
            >= 1000)
        .await,
        "consumed {}",
        consumed(&[&a, &b, &c, &d])
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    exactly_once(&[&a, &b, &c, &d], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarting_within_its_session_timeout_gets_its_partitions_back() {
    const TOPIC: &str = "kip848-static";
    const GROUP: &str = "g848-static";
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    let bootstrap = broker.bootstrap_servers();
    let _admin = create_topic(&bootstrap, TOPIC, 4).await;

    let mut a = Member::start(&bootstrap, GROUP, TOPIC, Some("static-a"));
    let b = Member::start(&bootstrap, GROUP, TOPIC, None);
    assert!(
        common::eventually(Duration::from_secs(30), || covering(&[&a, &b], 4)
            && a.assignment().len() == 2)
        .await,
        "{}",
        describe(&[&a, &b])
    );
    let held = a.assignment();
    let b_held = b.assignment();
    let b_revoked = b.revoked();
    a.stop();
    let a2 = Member::start(&bootstrap, GROUP, TOPIC, Some("static-a"));
    assert!(
        common::eventually(Duration::from_secs(20), || a2.assignment() == held).await,
        "the restarted static member got {:?}, had {held:?}; b has {:?}",
        a2.assignment(),
        b.assignment()
    );
    assert_eq!(b.assignment(), b_held, "b kept its partitions");
    assert_eq!(b.revoked(), b_revoked, "b saw no revocation");
    assert!(
        b.events
            .assigned
            .lock()
            .unwrap()
            .iter()
            .all(|p| b_held.contains(p)),
        "b was never given the static member's partitions"
    );
}
