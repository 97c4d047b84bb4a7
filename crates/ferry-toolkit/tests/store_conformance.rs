//! One conformance suite for every store, part 1: migrations and the outbox (the inbox is in
//! `inbox_conformance.rs`). Each case runs on SQLite and on PostgreSQL
//! (`FERRY_TEST_POSTGRES_URL`; skipped with a message when unset). The outbox cases publish
//! through the real built-in broker and read back with a real Kafka client.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::stores::{POSTGRES, SQLITE, StoreFeatures, TestStore};
use common::*;
use ferry_toolkit::sql::Database;
use ferry_toolkit::sql::outbox::{self, Relay, RelayConfig, RelayHandle};
use ferry_toolkit::{Envelope, IncomingMessage, Message, Publisher};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;

const WAIT: Duration = Duration::from_secs(60);

/// The service's own table: one row per accepted command.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "commands",
        "CREATE TABLE commands (entity TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (entity, seq))",
    ),
    (
        2,
        "totals",
        "CREATE TABLE totals (entity TEXT PRIMARY KEY, total BIGINT NOT NULL);
         CREATE INDEX totals_total ON totals (total)",
    ),
];

/// An event with a per-key sequence number, to check order and exactly-once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    pub entity: String,
    pub seq: u64,
}

impl Message for Counted {
    const TYPE: &'static str = "test.counted";
    fn key(&self) -> String {
        self.entity.clone()
    }
}

/// A command: the state change and its event, in one transaction.
async fn command(db: &Database, topic: &str, entity: &str, seq: u64) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO commands (entity, seq) VALUES ($1, $2)")
        .bind(entity)
        .bind(i64::try_from(seq)?)
        .execute(&mut *tx)
        .await?;
    let event = Counted {
        entity: entity.to_owned(),
        seq,
    };
    outbox::enqueue(&mut tx, topic, &event, &Envelope::new::<Counted>()).await?;
    tx.commit().await?;
    Ok(())
}

/// `keys` entities, `per_key` commands each; entities concurrently, each in order.
async fn commands(
    db: &Database,
    relay: Option<&RelayHandle>,
    topic: &str,
    keys: usize,
    per_key: u64,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for k in 0..keys {
        let (db, topic) = (db.clone(), topic.to_owned());
        let waker = relay.map(RelayHandle::waker);
        tasks.push(tokio::spawn(async move {
            for seq in 0..per_key {
                command(&db, &topic, &format!("entity-{k}"), seq).await?;
                if let Some(waker) = &waker {
                    waker.notify();
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Per entity, the sequence numbers in the order they were read. With `dedupe`, a message id
/// seen before is dropped (at-least-once after a crash); otherwise a repeat fails the test.
#[track_caller]
pub fn per_key(messages: &[IncomingMessage], dedupe: bool) -> HashMap<String, Vec<u64>> {
    let mut seen = std::collections::HashSet::new();
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    for m in messages {
        let envelope = Envelope::read_from(&m.headers).expect("envelope");
        if !seen.insert(envelope.message_id) {
            assert!(dedupe, "message {} delivered twice", envelope.message_id);
            continue;
        }
        let event: Counted = ferry_toolkit::decode(&m.payload).expect("payload");
        assert_eq!(m.key.as_deref(), Some(event.entity.as_bytes()));
        out.entry(event.entity).or_default().push(event.seq);
    }
    out
}

/// Every entity's events arrived, each once, in order.
#[track_caller]
pub fn check_in_order(got: &HashMap<String, Vec<u64>>, keys: usize, per_key: u64) {
    assert_eq!(got.len(), keys, "entities: {:?}", got.keys());
    for (entity, seqs) in got {
        let expected: Vec<u64> = (0..per_key).collect();
        assert_eq!(seqs, &expected, "events of {entity}");
    }
}

fn relay_config() -> RelayConfig {
    let mut config = RelayConfig {
        poll_interval: Duration::from_millis(200),
        lease_ttl: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(2),
        ..RelayConfig::default()
    };
    config.backoff.initial = Duration::from_millis(50);
    config.backoff.max_delay = Duration::from_secs(1);
    config
}

async fn migrated(f: &StoreFeatures) -> Option<TestStore> {
    let store = TestStore::open(f).await?;
    store
        .db
        .migrate("conformance", MIGRATIONS)
        .await
        .expect("migrations apply");
    Some(store)
}

async fn wait_drained(relay: &RelayHandle) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if relay.pending().await == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    super::$case(&super::SQLITE).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    super::$case(&super::POSTGRES).await
                }
            )*
        }
    };
}

conformance!(
    migrations_apply_once_when_two_processes_start_together,
    staged_messages_commit_and_roll_back_with_the_state_change,
    outbox_delivers_every_command_accepted_while_the_broker_was_down,
    failed_key_backs_off_without_holding_up_other_keys,
    two_relays_never_publish_a_row_twice,
    rows_staged_by_another_process_are_published,
    each_service_gets_a_database_of_its_own,
    sent_rows_are_deleted_or_kept_then_pruned,
    row_the_broker_refuses_for_good_is_parked_and_its_key_goes_on,
);

async fn migrations_apply_once_when_two_processes_start_together(
    f: &StoreFeatures,
) -> anyhow::Result<()> {
    let Some(store) = TestStore::open(f).await else {
        return Ok(());
    };
    let other = store.connect_again().await;
    let (a, b) = tokio::join!(
        store.db.migrate("conformance", MIGRATIONS),
        other.migrate("conformance", MIGRATIONS)
    );
    a?;
    b?;
    // And on every later start.
    store.db.migrate("conformance", MIGRATIONS).await?;
    let rows = sqlx::query(
        "SELECT service, version, name FROM ferry_migrations ORDER BY service, version",
    )
    .fetch_all(store.db.pool())
    .await?;
    let got: Vec<(String, i64, String)> = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let expected: Vec<(String, i64, String)> = [
        ("conformance", 1, "commands"),
        ("conformance", 2, "totals"),
        ("ferry-toolkit", 1, "outbox"),
        ("ferry-toolkit", 2, "inbox"),
        ("ferry-toolkit", 3, "leases"),
        ("ferry-toolkit", 4, "outbox_parked"),
    ]
    .iter()
    .map(|(s, v, n)| ((*s).to_owned(), *v, (*n).to_owned()))
    .collect();
    assert_eq!(got, expected);
    // A migration out of order is refused before anything runs.
    let bad = store
        .db
        .migrate("other", &[(2, "b", "SELECT 1"), (1, "a", "SELECT 1")])
        .await;
    assert!(bad.is_err());
    // A failing migration is rolled back and not recorded, so the next start retries it.
    let failing = store
        .db
        .migrate("other", &[(1, "broken", "CREATE TABLE x (a INT); NOT SQL")])
        .await;
    assert!(
        matches!(failing, Err(ferry_toolkit::Error::Migration { .. })),
        "{failing:?}"
    );
    store
        .db
        .migrate("other", &[(1, "fixed", "CREATE TABLE x (a INT)")])
        .await?;
    other.close().await;
    Ok(())
}

async fn staged_messages_commit_and_roll_back_with_the_state_change(
    f: &StoreFeatures,
) -> anyhow::Result<()> {
    let Some(store) = migrated(f).await else {
        return Ok(());
    };
    let db = &store.db;
    let event = Counted {
        entity: "e".into(),
        seq: 0,
    };
    let mut tx = db.begin().await?;
    outbox::enqueue(&mut tx, "t", &event, &Envelope::new::<Counted>()).await?;
    tx.rollback().await?;
    assert_eq!(outbox::pending(db).await?, 0, "rolled back: nothing staged");

    let envelope = Envelope::new::<Counted>();
    command(db, "t", "e", 0).await?;
    let mut tx = db.begin().await?;
    outbox::enqueue(&mut tx, "t", &event, &envelope).await?;
    tx.commit().await?;
    assert_eq!(outbox::pending(db).await?, 2);
    let row = sqlx::query(
        "SELECT message_id, type_name, msg_key FROM ferry_outbox ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(db.pool())
    .await?;
    assert_eq!(
        row.try_get::<String, _>(0)?,
        envelope.message_id.to_string()
    );
    assert_eq!(row.try_get::<String, _>(1)?, "test.counted");
    assert_eq!(row.try_get::<String, _>(2)?, "e");
    Ok(())
}

async fn outbox_delivers_every_command_accepted_while_the_broker_was_down(
    f: &StoreFeatures,
) -> anyhow::Result<()> {
    let Some(store) = migrated(f).await else {
        return Ok(());
    };
    let mut broker = TestBroker::start();
    let topic = unique(&format!("outbox-{}", f.name));
    let publisher = Publisher::kafka(&kafka(&broker.bootstrap()))?;
    broker.stop();

    let relay = Relay::new(store.db.clone(), publisher)
        .config(relay_config())
        .spawn();
    // 1,000 commands accepted while the broker is down: each one commits.
    commands(&store.db, Some(&relay), &topic, 10, 100).await?;
    assert_eq!(
        relay.pending().await,
        1000,
        "nothing could be published yet"
    );

    broker.restart();
    assert!(wait_drained(&relay).await, "the relay caught up");
    let messages = read_topic(&broker.bootstrap(), &topic, 1000, WAIT).await;
    assert_eq!(messages.len(), 1000);
    check_in_order(&per_key(&messages, false), 10, 100);
    // Nothing more arrives: none twice.
    let again = read_topic(&broker.bootstrap(), &topic, 1001, Duration::from_secs(2)).await;
    assert_eq!(again.len(), 1000);
    let sent: i64 = sqlx::query("SELECT COUNT(*) FROM ferry_outbox WHERE sent_at IS NOT NULL")
        .fetch_one(store.db.pool())
        .await?
        .try_get(0)?;
    assert_eq!(sent, 1000, "rows are marked sent");
    assert_eq!(relay.published(), 1000);
    relay.shutdown().await;
    Ok(())
}

async fn failed_key_backs_off_without_holding_up_other_keys(
    f: &StoreFeatures,
) -> anyhow::Result<()> {
    let Some(store) = migrated(f).await else {
        return Ok(());
    };
    let broker = TestBroker::start();
    let good = unique("good");
    // The real Kafka sender, except that key "bad" meets a transient failure (as if its
    // partition's leader were away) until the test heals it.
    let flaky = FlakyKey {
        inner: ferry_toolkit::kafka::KafkaSender::new(&kafka(&broker.bootstrap()))?,
        key: b"bad",
        broken: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    };
    let broken = flaky.broken.clone();
    let publisher = Publisher::new(flaky);
    let db = &store.db;
    for seq in 0..3 {
        command(db, &good, "bad", seq).await?;
    }
    let relay = Relay::new(db.clone(), publisher)
        .config(relay_config())
        .spawn();
    commands(db, Some(&relay), &good, 3, 20).await?;
    let messages = read_topic(&broker.bootstrap(), &good, 60, WAIT).await;
    check_in_order(&per_key(&messages, false), 3, 20);

    // The failing key is retried with backoff and its later rows wait behind the first.
    let failing = |db: Database| async move {
        let row = sqlx::query(
            "SELECT MIN(attempts), MAX(attempts), COUNT(*) FROM ferry_outbox WHERE msg_key = 'bad' AND sent_at IS NULL",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        (
            row.try_get::<i64, _>(0).unwrap_or(0),
            row.try_get::<i64, _>(1).unwrap_or(0),
            row.try_get::<i64, _>(2).unwrap(),
        )
    };
    let deadline = Instant::now() + WAIT;
    while failing(db.clone()).await.1 < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, max_attempts, unsent) = failing(db.clone()).await;
    assert!(max_attempts >= 2, "retried: {max_attempts} attempts");
    assert_eq!(unsent, 3, "none of the failing key's rows was sent");
    let later_tried: i64 =
        sqlx::query("SELECT COUNT(*) FROM ferry_outbox WHERE msg_key = 'bad' AND attempts > 0")
            .fetch_one(db.pool())
            .await?
            .try_get(0)?;
    assert_eq!(
        later_tried, 1,
        "only the first row of the key was attempted"
    );
    let error: Option<String> =
        sqlx::query("SELECT last_error FROM ferry_outbox WHERE msg_key = 'bad' AND attempts > 0")
            .fetch_one(db.pool())
            .await?
            .try_get(0)?;
    assert!(error.is_some_and(|e| !e.is_empty()));

    // The failure passes: the key's rows go out, in order, none of them parked.
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    relay.notify();
    assert!(wait_drained(&relay).await);
    let messages = read_topic(&broker.bootstrap(), &good, 63, WAIT).await;
    let got = per_key(&messages, false);
    assert_eq!(got["bad"], [0, 1, 2]);
    relay.shutdown().await;
    Ok(())
}

async fn two_relays_never_publish_a_row_twice(f: &StoreFeatures) -> anyhow::Result<()> {
    let Some(store) = migrated(f).await else {
        return Ok(());
    };
    let broker = TestBroker::start();
    let topic = unique("two-relays");
    let publisher = Publisher::kafka(&kafka(&broker.bootstrap()))?;
    let other_db = store.connect_again().await;
    let first = Relay::new(store.db.clone(), publisher.clone())
        .config(relay_config())
        .spawn();
    let second = Relay::new(other_db.clone(), publisher.clone())
        .config(relay_config())
        .spawn();
    // Both relays are woken by every command: only the leaseholder publishes.
    let both = Arc::new((first.waker(), second.waker()));
    let mut tasks = Vec::new();
    for k in 0..6 {
        let (db, topic, both) = (store.db.clone(), topic.clone(), both.clone());
        tasks.push(tokio::spawn(async move {
            for seq in 0..50 {
                command(&db, &topic, &format!("entity-{k}"), seq).await?;
                both.0.notify();
                both.1.notify();
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    assert!(wait_drained(&first).await);
    assert!(first.is_leader() ^ second.is_leader(), "exactly one leader");
    assert_eq!(first.published() + second.published(), 300);

    // The leader stops and hands over at once: the other one publishes what follows.
    let (leader, follower) = if first.is_leader() {
        (first, second)
    } else {
        (second, first)
    };
    leader.shutdown().await;
    for seq in 50..60 {
        command(&store.db, &topic, "entity-0", seq).await?;
        follower.notify();
    }
    let start = Instant::now();
    assert!(wait_drained(&follower).await);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "handed over without waiting for expiry"
    );
    let messages = read_topic(&broker.bootstrap(), &topic, 310, WAIT).await;
    assert_eq!(messages.len(), 310);
    let got = per_key(&messages, false);
    assert_eq!(got["entity-0"].len(), 60);
    follower.shutdown().await;
    other_db.close().await;
    Ok(())
}

async fn rows_staged_by_another_process_are_published(f: &StoreFeatures) -> anyhow::Result<()> {
    let Some(store) = migrated(f).await else {
        return Ok(());
    };
    let broker = TestBroker::start();
    let topic = unique("elsewhere");
    let publisher = Publisher::kafka(&kafka(&broker.bootstrap()))?;
    // With LISTEN/NOTIFY the relay must not need its poll: make the poll too slow to pass.
    let poll = if f.notifies_across_processes {
        Duration::from_secs(30)
    } else {
        Duration::from_millis(300)
    };
    let relay = Relay::new(store.db.clone(), publisher)
        .config(RelayConfig {
            poll_interval: poll,
            ..relay_config()
        })
        .spawn();
    // Let the relay take its lease and go idle first.
    let deadline = Instant::now() + WAIT;
    while !relay.is_leader() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = store.connect_again().await;
    // Staged through another pool, with no in-process wake-up.
    let started = Instant::now();
    commands(&other, None, &topic, 2, 5).await?;
    let messages = read_topic(&broker.bootstrap(), &topic, 10, Duration::from_secs(20)).await;
    check_in_order(&per_key(&messages, false), 2, 5);
    assert!(started.elapsed() < Duration::from_secs(20));
    relay.shutdown().await;
    other.close().await;
    Ok(())
}

async fn each_service_gets_a_database_of_its_own(f: &StoreFeatures) -> anyhow::Result<()> {
    let Some(store) = TestStore::open(f).await else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let url = (f.name == "postgres").then_some(store.url.as_str());
    // Unique service names, so parallel runs on one PostgreSQL do not meet.
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let (a, b) = (format!("svc-a-{suffix}"), format!("svc-b-{suffix}"));
    let first = Database::for_service(url, dir.path(), &a).await?;
    let second = Database::for_service(url, dir.path(), &b).await?;
    first.migrate(&a, MIGRATIONS).await?;
    second.migrate(&b, MIGRATIONS).await?;
    command(&first, "t", "only-in-a", 0).await?;
    let in_b: i64 = sqlx::query("SELECT COUNT(*) FROM commands")
        .fetch_one(second.pool())
        .await?
        .try_get(0)?;
    assert_eq!(
        in_b, 0,
        "the second service does not see the first one's rows"
    );
    if url.is_none() {
        assert!(dir.path().join(format!("{a}.db")).exists());
    } else {
        for service in [&a, &b] {
            let schema = service.replace('-', "_");
            sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .execute(store.db.pool())
                .await?;
        }
    }
    first.close().await;
    second.close().await;
    Ok(())
}

async fn sent_rows_are_deleted_or_kept_then_pruned(f: &StoreFeatures) -> anyhow::Result<()> {
    let Some(store) = migrated(f).await else {
        return Ok(());
    };
    let broker = TestBroker::start();
    let topic = unique("retain");
    let publisher = Publisher::kafka(&kafka(&broker.bootstrap()))?;
    let count = |db: Database| async move {
        let row = sqlx::query("SELECT COUNT(*) FROM ferry_outbox")
            .fetch_one(db.pool())
            .await
            .unwrap();
        row.try_get::<i64, _>(0).unwrap()
    };
    // Kept (the default): marked sent, then pruned once older than `retain_sent`.
    let relay = Relay::new(store.db.clone(), publisher.clone())
        .config(relay_config())
        .spawn();
    commands(&store.db, Some(&relay), &topic, 2, 5).await?;
    assert!(wait_drained(&relay).await);
    relay.shutdown().await;
    assert_eq!(count(store.db.clone()).await, 10);
    assert_eq!(
        outbox::prune_sent(&store.db, Duration::from_secs(3600)).await?,
        0
    );
    sqlx::query("UPDATE ferry_outbox SET sent_at = sent_at - 7200000")
        .execute(store.db.pool())
        .await?;
    assert_eq!(
        outbox::prune_sent(&store.db, Duration::from_secs(3600)).await?,
        10
    );

    // Not kept: deleted as soon as published.
    let relay = Relay::new(store.db.clone(), publisher)
        .config(RelayConfig {
            retain_sent: Duration::ZERO,
            ..relay_config()
        })
        .spawn();
    for seq in 5..10 {
        command(&store.db, &topic, "entity-0", seq).await?;
    }
    relay.notify();
    assert!(wait_drained(&relay).await);
    assert_eq!(count(store.db.clone()).await, 0);
    let messages = read_topic(&broker.bootstrap(), &topic, 15, WAIT).await;
    assert_eq!(
        per_key(&messages, false)["entity-0"],
        (0..10).collect::<Vec<_>>()
    );
    relay.shutdown().await;
    Ok(())
}

/// A sender that fails one key's messages with a transient error while `broken`, and sends
/// everything else through the real Kafka sender.
#[derive(Debug)]
struct FlakyKey {
    inner: ferry_toolkit::kafka::KafkaSender,
    key: &'static [u8],
    broken: Arc<std::sync::atomic::AtomicBool>,
}

#[ferry_toolkit::async_trait]
impl ferry_toolkit::Sender for FlakyKey {
    async fn send(
        &self,
        message: ferry_toolkit::OutgoingMessage,
    ) -> Result<ferry_toolkit::Receipt, ferry_toolkit::SendError> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst)
            && message.key.as_deref() == Some(self.key)
        {
            return Err(ferry_toolkit::SendError {
                message,
                error: ferry_toolkit::Error::Unavailable("leader not available (injected)".into()),
            });
        }
        self.inner.send(message).await
    }
}

/// The same type as [`Counted`] with padding, to make one event larger than its topic allows.
#[derive(Debug, Serialize, Deserialize)]
struct Padded {
    entity: String,
    seq: u64,
    pad: String,
}

impl Message for Padded {
    const TYPE: &'static str = Counted::TYPE;
    fn key(&self) -> String {
        self.entity.clone()
    }
}

/// A committed event larger than the topic's `max.message.bytes` was once retried forever, and
/// the rows of its key behind it never went out. Now the relay parks it (kept, with the reason,
/// counted, listed) and publishes the key's next rows.
async fn row_the_broker_refuses_for_good_is_parked_and_its_key_goes_on(
    f: &StoreFeatures,
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let Some(store) = migrated(f).await else {
        return Ok(());
    };
    ferry_toolkit::ops::metrics::install();
    let broker = TestBroker::start();
    let topic = unique("small");
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()?;
    for created in admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))
                .set("max.message.bytes", "2048")],
            &AdminOptions::new(),
        )
        .await?
    {
        created.map_err(|(t, e)| anyhow::anyhow!("create {t}: {e}"))?;
    }
    let db = &store.db;
    command(db, &topic, "k", 0).await?;
    let mut tx = db.begin().await?;
    let big = Padded {
        entity: "k".into(),
        seq: 1,
        pad: "x".repeat(10_000),
    };
    outbox::enqueue(&mut tx, &topic, &big, &Envelope::new::<Padded>()).await?;
    tx.commit().await?;
    command(db, &topic, "k", 2).await?;

    let publisher = Publisher::kafka(&kafka(&broker.bootstrap()))?;
    let relay = Relay::new(db.clone(), publisher)
        .config(relay_config())
        .spawn();
    let messages = read_topic(&broker.bootstrap(), &topic, 2, WAIT).await;
    assert_eq!(
        per_key(&messages, false)["k"],
        [0, 2],
        "the key went on past the refused row"
    );
    assert!(wait_drained(&relay).await, "a parked row is not pending");

    let parked = outbox::parked(db, 10).await?;
    assert_eq!(parked.len(), 1, "{parked:?}");
    let row = &parked[0];
    assert_eq!(
        (row.topic.as_str(), row.key.as_str()),
        (topic.as_str(), "k")
    );
    assert!(row.payload_bytes > 10_000);
    assert!(
        row.reason.to_lowercase().contains("too large"),
        "the reason says why: {}",
        row.reason
    );
    assert!(metric("ferry_outbox_parked_total", &[("topic", &topic)]) >= 1.0);

    // Parked means never tried again: its attempts stay where parking left them.
    let attempts = |db: Database| async move {
        sqlx::query("SELECT attempts FROM ferry_outbox WHERE parked_at IS NOT NULL")
            .fetch_one(db.pool())
            .await
            .and_then(|r| r.try_get::<i64, _>(0))
            .unwrap()
    };
    let before = attempts(db.clone()).await;
    relay.notify();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(attempts(db.clone()).await, before);
    relay.shutdown().await;
    Ok(())
}
