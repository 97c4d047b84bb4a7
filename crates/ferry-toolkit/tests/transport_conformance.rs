//! One conformance suite for every transport: each case runs on the Kafka protocol (the
//! built-in broker, in-process) and on AMQP (the RabbitMQ named by `FERRY_TEST_AMQP_URL`,
//! through a loopback proxy that can simulate a broker restart; skipped with a message when
//! unset). Each adapter's [`TransportFeatures`] says what it guarantees; the cases check it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::amqp::{TcpProxy, amqp_addr, amqp_config, amqp_url, delete_queues, take, via};
use common::stores::{SQLITE, TestStore};
use common::*;
use ferry_toolkit::sql::{Database, inbox};
use ferry_toolkit::{
    Envelope, HandlerError, Headers, IncomingMessage, Message, MessageContext, OutgoingMessage,
    Publisher, RetryPolicy, Router, TransportFeatures, amqp, dlq, handler_fn, kafka,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(45);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Kafka,
    Amqp,
}

/// A transport under test.
struct Harness {
    kind: Kind,
    features: TransportFeatures,
    broker: Option<TestBroker>,
    proxy: Option<TcpProxy>,
    /// The real RabbitMQ URL (for reads and clean-up) and the one through the proxy.
    amqp_direct: String,
    amqp_proxied: String,
    queues: Mutex<Vec<String>>,
}

impl Harness {
    async fn open(kind: Kind) -> Option<Harness> {
        init_tracing();
        match kind {
            Kind::Kafka => Some(Harness {
                kind,
                features: kafka::FEATURES,
                broker: Some(TestBroker::start()),
                proxy: None,
                amqp_direct: String::new(),
                amqp_proxied: String::new(),
                queues: Mutex::new(Vec::new()),
            }),
            Kind::Amqp => {
                let Some(url) = amqp_url() else {
                    eprintln!("skipped: {} not set", common::amqp::AMQP_ENV);
                    return None;
                };
                let proxy = TcpProxy::start(amqp_addr(&url)).await;
                Some(Harness {
                    kind,
                    features: amqp::FEATURES,
                    broker: None,
                    amqp_proxied: via(&url, proxy.addr),
                    proxy: Some(proxy),
                    amqp_direct: url,
                    queues: Mutex::new(Vec::new()),
                })
            }
        }
    }

    /// A fresh topic (and its dead-letter topic), removed after the test on AMQP.
    fn topic(&self, prefix: &str) -> String {
        let topic = unique(prefix);
        let mut queues = self.queues.lock();
        queues.push(topic.clone());
        queues.push(dlq::topic_for(&topic));
        topic
    }

    fn publisher(&self) -> Publisher {
        match self.kind {
            Kind::Kafka => Publisher::kafka(&kafka(&self.bootstrap())).unwrap(),
            Kind::Amqp => Publisher::amqp(&amqp_config(&self.amqp_proxied)),
        }
    }

    fn bootstrap(&self) -> String {
        self.broker.as_ref().unwrap().bootstrap()
    }

    fn start(&self, router: Router, publisher: Publisher) -> Running {
        match self.kind {
            Kind::Kafka => Running::Kafka(
                kafka::start_router(router, &kafka(&self.bootstrap()), publisher).unwrap(),
            ),
            Kind::Amqp => Running::Amqp(
                amqp::start_router(router, &amqp_config(&self.amqp_proxied), publisher).unwrap(),
            ),
        }
    }

    /// Reads `count` messages of `topic` as they are on the broker (consuming them on AMQP).
    async fn read(&self, topic: &str, count: usize) -> Vec<IncomingMessage> {
        match self.kind {
            Kind::Kafka => read_topic(&self.bootstrap(), topic, count, WAIT).await,
            Kind::Amqp => take(&self.amqp_direct, topic, count, WAIT).await,
        }
    }

    /// What clients see when the broker restarts: every connection drops, and for a moment
    /// nothing answers.
    async fn interrupt(&mut self) {
        match self.kind {
            Kind::Kafka => self.broker.as_mut().unwrap().restart(),
            Kind::Amqp => {
                let proxy = self.proxy.as_ref().unwrap();
                proxy.cut();
                tokio::time::sleep(Duration::from_secs(1)).await;
                proxy.restore();
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if self.kind == Kind::Amqp {
            delete_queues(&self.amqp_direct, std::mem::take(&mut *self.queues.lock()));
        }
    }
}

enum Running {
    Kafka(kafka::RouterHandle),
    Amqp(amqp::RouterHandle),
}

impl Running {
    async fn shutdown(self) {
        match self {
            Running::Kafka(h) => h.shutdown().await,
            Running::Amqp(h) => h.shutdown().await,
        }
    }

    async fn abort(self) {
        match self {
            Running::Kafka(h) => h.abort().await,
            Running::Amqp(h) => h.abort().await,
        }
    }

    fn is_ready(&self) -> bool {
        match self {
            Running::Kafka(h) => h.is_ready(),
            Running::Amqp(h) => h.is_ready(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Numbered {
    entity: String,
    seq: u64,
}

impl Message for Numbered {
    const TYPE: &'static str = "test.numbered";
    fn key(&self) -> String {
        self.entity.clone()
    }
}

fn numbered(entity: &str, seq: u64) -> Numbered {
    Numbered {
        entity: entity.to_owned(),
        seq,
    }
}

/// Handled messages, in the order handled.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(Numbered, MessageContext)>>>);

impl Seen {
    fn len(&self) -> usize {
        self.0.lock().len()
    }
    fn messages(&self) -> Vec<Numbered> {
        self.0.lock().iter().map(|(m, _)| m.clone()).collect()
    }
    async fn wait_for(&self, n: usize) -> bool {
        let seen = self.clone();
        wait_until(WAIT, move || seen.len() >= n).await
    }
}

fn recording_router(group: &str, topic: &str, seen: &Seen) -> Router {
    let seen = seen.clone();
    Router::new(group).subscribe(topic).handle(handler_fn(
        move |m: Numbered, ctx: MessageContext| {
            seen.0.lock().push((m, ctx));
            async { Ok::<_, HandlerError>(()) }
        },
    ))
}

/// Publishes, retrying while the transport reconnects.
async fn publish_eventually(publisher: &Publisher, topic: &str, message: Numbered) {
    let deadline = Instant::now() + WAIT;
    let mut message = message;
    loop {
        match publisher.publish(topic, message).await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                message = e.into_inner();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot publish: {e}"),
        }
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod kafka_protocol {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    let Some(h) = super::Harness::open(super::Kind::Kafka).await else { return Ok(()) };
                    super::$case(h).await
                }
            )*
        }
        mod amqp_0_9_1 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    let Some(h) = super::Harness::open(super::Kind::Amqp).await else { return Ok(()) };
                    super::$case(h).await
                }
            )*
        }
    };
}

conformance!(
    published_message_keeps_payload_key_and_envelope,
    each_key_is_handled_in_order_and_once,
    failing_handler_is_retried_then_dead_lettered,
    undecodable_message_is_dead_lettered_at_once,
    redelivered_message_changes_the_database_once,
    router_and_publisher_recover_after_a_broker_restart,
    two_groups_each_get_every_message_or_share_them,
    redriven_message_reaches_its_group_and_is_never_dropped,
);

async fn published_message_keeps_payload_key_and_envelope(h: Harness) -> anyhow::Result<()> {
    let topic = h.topic("envelope");
    let publisher = h.publisher();
    let delivery = publisher.publish(&topic, numbered("order-7", 1)).await?;
    let messages = h.read(&topic, 1).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.key.as_deref(), Some(b"order-7".as_slice()));
    assert_eq!(
        ferry_toolkit::decode::<Numbered>(&m.payload)?,
        numbered("order-7", 1)
    );
    let envelope = Envelope::read_from(&m.headers)?;
    assert_eq!(envelope.message_id, delivery.message_id);
    assert_eq!(envelope.correlation_id, delivery.correlation_id);
    assert_eq!(envelope.type_name, Numbered::TYPE);
    assert!(h.features.persistent);
    Ok(())
}

async fn each_key_is_handled_in_order_and_once(h: Harness) -> anyhow::Result<()> {
    assert!(h.features.ordered_per_key);
    let topic = h.topic("order");
    if h.kind == Kind::Kafka {
        create_topic(&h.bootstrap(), &topic, 3).await;
    }
    let publisher = h.publisher();
    let (keys, per_key) = (5, 40u64);
    let mut tasks = Vec::new();
    for k in 0..keys {
        let (publisher, topic) = (publisher.clone(), topic.clone());
        tasks.push(tokio::spawn(async move {
            for seq in 0..per_key {
                publisher
                    .publish(&topic, numbered(&format!("e{k}"), seq))
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    // One consumer per queue (AMQP) keeps order; Kafka keeps it per partition in any case.
    let seen = Seen::default();
    let running = h.start(recording_router(&unique("order"), &topic, &seen), publisher);
    assert!(seen.wait_for(keys * per_key as usize).await);
    let mut by_key: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for m in seen.messages() {
        by_key.entry(m.entity).or_default().push(m.seq);
    }
    for (key, seqs) in &by_key {
        assert_eq!(seqs, &(0..per_key).collect::<Vec<_>>(), "key {key}");
    }
    running.shutdown().await;
    Ok(())
}

async fn failing_handler_is_retried_then_dead_lettered(h: Harness) -> anyhow::Result<()> {
    let topic = h.topic("retry");
    let publisher = h.publisher();
    let attempts = Seen::default();
    let recorded = attempts.clone();
    let router = Router::new(unique("retry"))
        .subscribe(&topic)
        .retry(RetryPolicy {
            initial: Duration::from_millis(20),
            max_attempts: 3,
            jitter: 0.0,
            ..RetryPolicy::default()
        })
        .handle(handler_fn(move |m: Numbered, ctx: MessageContext| {
            recorded.0.lock().push((m.clone(), ctx));
            async move {
                if m.entity == "poison" {
                    Err(HandlerError::new("always fails"))
                } else {
                    Ok(())
                }
            }
        }));
    publisher.publish(&topic, numbered("poison", 0)).await?;
    publisher.publish(&topic, numbered("poison", 1)).await?;
    publisher.publish(&topic, numbered("fine", 0)).await?;
    let running = h.start(router, publisher);
    assert!(
        attempts.wait_for(7).await,
        "3 + 3 attempts, then the next message"
    );
    let order: Vec<(String, u64, u32)> = attempts
        .0
        .lock()
        .iter()
        .map(|(m, ctx)| (m.entity.clone(), m.seq, ctx.attempt()))
        .collect();
    assert_eq!(
        order,
        [
            ("poison".into(), 0, 1),
            ("poison".into(), 0, 2),
            ("poison".into(), 0, 3),
            ("poison".into(), 1, 1),
            ("poison".into(), 1, 2),
            ("poison".into(), 1, 3),
            ("fine".into(), 0, 1),
        ]
    );
    let dead = h.read(&dlq::topic_for(&topic), 2).await;
    assert_eq!(dead.len(), 2);
    for (i, d) in dead.iter().enumerate() {
        assert_eq!(
            d.headers.get_str(dlq::header::REASON),
            Some("handler-failed")
        );
        assert_eq!(d.headers.get_str(dlq::header::ATTEMPTS), Some("3"));
        assert_eq!(d.headers.get_str(dlq::header::ERROR), Some("always fails"));
        assert_eq!(
            d.headers.get_str(dlq::header::ORIGINAL_TOPIC),
            Some(topic.as_str())
        );
        assert_eq!(
            ferry_toolkit::decode::<Numbered>(&d.payload)?,
            numbered("poison", i as u64)
        );
        assert_eq!(d.key.as_deref(), Some(b"poison".as_slice()));
    }
    running.shutdown().await;
    Ok(())
}

async fn undecodable_message_is_dead_lettered_at_once(h: Harness) -> anyhow::Result<()> {
    let topic = h.topic("garbage");
    let publisher = h.publisher();
    // No envelope at all, then a valid envelope with a payload that is not the type's JSON.
    publisher
        .send_raw(OutgoingMessage {
            topic: topic.clone(),
            key: Some(b"k".to_vec()),
            headers: Headers::new(),
            payload: b"not json".to_vec(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut headers = Headers::new();
    let mut envelope = Envelope::new::<Numbered>();
    envelope.type_name = Numbered::TYPE.into();
    envelope.write_to(&mut headers);
    publisher
        .send_raw(OutgoingMessage {
            topic: topic.clone(),
            key: Some(b"k".to_vec()),
            headers,
            payload: br#"{"entity": 5}"#.to_vec(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    publisher.publish(&topic, numbered("after", 0)).await?;
    let seen = Seen::default();
    let router = recording_router(&unique("garbage"), &topic, &seen).retry(RetryPolicy {
        initial: Duration::from_secs(5),
        ..RetryPolicy::default()
    });
    let running = h.start(router, publisher);
    assert!(seen.wait_for(1).await);
    assert_eq!(
        seen.messages(),
        [numbered("after", 0)],
        "no retries, no stall"
    );
    let dead = h.read(&dlq::topic_for(&topic), 2).await;
    assert_eq!(dead.len(), 2);
    for d in &dead {
        assert_eq!(d.headers.get_str(dlq::header::REASON), Some("undecodable"));
        assert_eq!(d.headers.get_str(dlq::header::ATTEMPTS), Some("0"));
    }
    assert_eq!(dead[0].payload, b"not json");
    running.shutdown().await;
    Ok(())
}

const TOTALS: &[(i64, &str, &str)] = &[(
    1,
    "totals",
    "CREATE TABLE totals (entity TEXT PRIMARY KEY, total BIGINT NOT NULL)",
)];

async fn total(db: &Database, entity: &str) -> i64 {
    use sqlx::Row as _;
    sqlx::query("SELECT total FROM totals WHERE entity = $1")
        .bind(entity)
        .fetch_optional(db.pool())
        .await
        .unwrap()
        .map_or(0, |r| r.try_get(0).unwrap())
}

/// The handler commits its write and its inbox record, then the process "dies" before it
/// acknowledges; the transport delivers the message again and the inbox skips it.
async fn redelivered_message_changes_the_database_once(h: Harness) -> anyhow::Result<()> {
    let store = TestStore::open(&SQLITE).await.expect("sqlite");
    store.db.migrate("transport-conformance", TOTALS).await?;
    let topic = h.topic("inbox");
    let group = unique("inbox");
    let publisher = h.publisher();
    publisher.publish(&topic, numbered("account", 0)).await?;

    // (applied, skipped) per delivery, and a gate that holds the first delivery after commit.
    let outcomes = Arc::new(Mutex::new(Vec::<bool>::new()));
    let gate = Arc::new(Semaphore::new(0));
    let router = |db: Database, outcomes: Arc<Mutex<Vec<bool>>>, gate: Arc<Semaphore>| {
        let group = group.clone();
        Router::new(group.clone())
            .subscribe(&topic)
            .handle(handler_fn(move |m: Numbered, ctx: MessageContext| {
                let (db, outcomes, gate, group) =
                    (db.clone(), outcomes.clone(), gate.clone(), group.clone());
                async move {
                    let entity = m.entity.clone();
                    let applied = inbox::process_once(&db, &group, ctx.message_id(), move |tx| {
                        Box::pin(async move {
                            sqlx::query(
                                "INSERT INTO totals (entity, total) VALUES ($1, 1)
                                 ON CONFLICT (entity) DO UPDATE SET total = totals.total + 1",
                            )
                            .bind(entity)
                            .execute(&mut *tx)
                            .await?;
                            Ok(())
                        })
                    })
                    .await?;
                    outcomes.lock().push(applied);
                    // Committed; now "crash" before the acknowledgement.
                    let _permit = gate.acquire().await;
                    Ok(())
                }
            }))
    };
    let first = h.start(
        router(store.db.clone(), outcomes.clone(), gate.clone()),
        publisher.clone(),
    );
    let o = outcomes.clone();
    assert!(wait_until(WAIT, move || o.lock().len() == 1).await);
    assert_eq!(total(&store.db, "account").await, 1);
    first.abort().await;

    // Redelivered to the group's next member: acknowledged, not applied again.
    gate.add_permits(100);
    let second = h.start(
        router(store.db.clone(), outcomes.clone(), gate.clone()),
        publisher,
    );
    let o = outcomes.clone();
    assert!(
        wait_until(WAIT, move || o.lock().len() == 2).await,
        "redelivered"
    );
    assert_eq!(*outcomes.lock(), [true, false]);
    assert_eq!(
        total(&store.db, "account").await,
        1,
        "the database changed once"
    );
    second.shutdown().await;
    Ok(())
}

async fn router_and_publisher_recover_after_a_broker_restart(mut h: Harness) -> anyhow::Result<()> {
    let topic = h.topic("restart");
    let publisher = h.publisher();
    let seen = Seen::default();
    publisher.publish(&topic, numbered("e", 0)).await?;
    let running = h.start(
        recording_router(&unique("restart"), &topic, &seen),
        publisher.clone(),
    );
    assert!(seen.wait_for(1).await);

    h.interrupt().await;
    publish_eventually(&publisher, &topic, numbered("e", 1)).await;
    assert!(seen.wait_for(2).await, "handled after the restart");
    let r = &running;
    let deadline = Instant::now() + WAIT;
    while !r.is_ready() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running.is_ready(), "ready again");
    let seqs: Vec<u64> = seen.messages().iter().map(|m| m.seq).collect();
    assert_eq!(seqs.first(), Some(&0));
    assert_eq!(seqs.last(), Some(&1));
    running.shutdown().await;
    Ok(())
}

/// Kafka: each consumer group gets its own copy. AMQP: a topic is one queue, and the routers
/// subscribed to it share its messages. Either way nothing is lost or handled twice per copy.
async fn two_groups_each_get_every_message_or_share_them(h: Harness) -> anyhow::Result<()> {
    let topic = h.topic("groups");
    let publisher = h.publisher();
    for seq in 0..10 {
        publisher.publish(&topic, numbered("e", seq)).await?;
    }
    let (a, b) = (Seen::default(), Seen::default());
    let first = h.start(
        recording_router(&unique("group-a"), &topic, &a),
        publisher.clone(),
    );
    let second = h.start(recording_router(&unique("group-b"), &topic, &b), publisher);
    let expected = if h.features.each_group_gets_every_message {
        20
    } else {
        10
    };
    let (ca, cb) = (a.clone(), b.clone());
    assert!(wait_until(WAIT, move || ca.len() + cb.len() >= expected).await);
    // Nothing more arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.len() + b.len(), expected);
    if h.features.each_group_gets_every_message {
        assert_eq!((a.len(), b.len()), (10, 10));
    } else {
        let mut all: Vec<u64> = a
            .messages()
            .iter()
            .chain(&b.messages())
            .map(|m| m.seq)
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }
    first.shutdown().await;
    second.shutdown().await;
    Ok(())
}

/// A re-driven dead letter names the group that failed it. Kafka: only that group handles it,
/// the other skips it (issue 13: a re-drive made every group fail or apply it again). AMQP: the
/// routers of a queue compete for its messages, so whichever takes it handles it; skipping it
/// there would drop it.
async fn redriven_message_reaches_its_group_and_is_never_dropped(h: Harness) -> anyhow::Result<()> {
    let topic = h.topic("redriven");
    let publisher = h.publisher();
    let (group_a, group_b) = (unique("group-a"), unique("group-b"));
    let mut headers = Headers::new();
    Envelope::new::<Numbered>().write_to(&mut headers);
    let original = IncomingMessage {
        topic: topic.clone(),
        partition: 0,
        offset: 0,
        key: Some(b"e".to_vec()),
        headers,
        payload: ferry_toolkit::encode(&numbered("e", 0))?,
    };
    let letter = dlq::dead_letter(&original, dlq::Reason::HandlerFailed, "boom", 1, &group_a);
    let parked = IncomingMessage {
        topic: letter.topic,
        partition: 0,
        offset: 0,
        key: letter.key,
        headers: letter.headers,
        payload: letter.payload,
    };
    let back = dlq::restore(&parked).expect("restorable");
    assert_eq!(
        back.headers.get_str(dlq::header::REDRIVE_GROUP),
        Some(group_a.as_str())
    );
    publisher
        .send_raw(back)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    publisher.publish(&topic, numbered("e", 1)).await?;

    let (a, b) = (Seen::default(), Seen::default());
    let first = h.start(recording_router(&group_a, &topic, &a), publisher.clone());
    let second = h.start(recording_router(&group_b, &topic, &b), publisher);
    let expected = if h.features.each_group_gets_every_message {
        3
    } else {
        2
    };
    let (ca, cb) = (a.clone(), b.clone());
    assert!(wait_until(WAIT, move || ca.len() + cb.len() >= expected).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seqs = |seen: &Seen| seen.messages().iter().map(|m| m.seq).collect::<Vec<_>>();
    if h.features.each_group_gets_every_message {
        assert_eq!(
            seqs(&a),
            [0, 1],
            "the addressed group handles the re-driven message"
        );
        assert_eq!(seqs(&b), [1], "the other group skips it");
    } else {
        let mut all = [seqs(&a), seqs(&b)].concat();
        all.sort_unstable();
        assert_eq!(all, [0, 1], "handled once, by whichever router took it");
    }
    first.shutdown().await;
    second.shutdown().await;
    Ok(())
}
