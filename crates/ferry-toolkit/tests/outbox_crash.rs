//! A process killed with SIGKILL between commit and publish loses nothing.
//!
//! The child is this test binary run again (`std::env::current_exe()`) with only the
//! `outbox_child` test selected and `FERRY_OUTBOX_CRASH_CHILD` set: that test is a no-op
//! unless the variable is there, and then it becomes a service that accepts commands (state
//! change + outbox row, one transaction each) as fast as it can while its relay publishes them,
//! deliberately slowly so that committed rows pile up unpublished. It prints a line per commit;
//! the parent SIGKILLs it mid-stream, then starts a relay of its own on the same database and
//! checks that every committed command's event was published, in order per key. Re-running
//! the test binary needs no extra build target and runs exactly the code under test.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::stores::{POSTGRES, SQLITE, StoreFeatures, TestStore};
use common::*;
use ferry_toolkit::sql::Database;
use ferry_toolkit::sql::outbox::{self, Relay, RelayConfig};
use ferry_toolkit::{Envelope, Message, Publisher};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;

const CHILD_ENV: &str = "FERRY_OUTBOX_CRASH_CHILD";
const WAIT: Duration = Duration::from_secs(60);
const ENTITIES: usize = 4;
/// Commits the parent waits for before killing the child.
const KILL_AFTER: usize = 300;

const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "commands",
    "CREATE TABLE commands (entity TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (entity, seq))",
)];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Counted {
    entity: String,
    seq: u64,
}

impl Message for Counted {
    const TYPE: &'static str = "test.counted";
    fn key(&self) -> String {
        self.entity.clone()
    }
}

/// What the parent tells the child.
#[derive(Debug, Serialize, Deserialize)]
struct ChildSpec {
    url: String,
    schema: String,
    bootstrap: String,
    topic: String,
}

fn relay_config() -> RelayConfig {
    RelayConfig {
        poll_interval: Duration::from_millis(200),
        lease_ttl: Duration::from_secs(2),
        ..RelayConfig::default()
    }
}

/// The child: runs until killed. Does nothing in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_child() -> anyhow::Result<()> {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return Ok(());
    };
    let spec: ChildSpec = serde_json::from_str(&spec)?;
    let db = Database::connect_in_schema(&spec.url, &spec.schema).await?;
    let publisher = Publisher::kafka(&kafka(&spec.bootstrap))?;
    // A slow relay (small batches, one key at a time), so commits outrun it.
    let relay = Relay::new(db.clone(), publisher)
        .config(RelayConfig {
            batch_size: 5,
            max_in_flight_keys: 1,
            ..relay_config()
        })
        .spawn();
    let mut tasks = Vec::new();
    for k in 0..ENTITIES {
        let (db, topic, waker) = (db.clone(), spec.topic.clone(), relay.waker());
        tasks.push(tokio::spawn(async move {
            for seq in 0u64.. {
                let entity = format!("entity-{k}");
                let mut tx = db.begin().await?;
                sqlx::query("INSERT INTO commands (entity, seq) VALUES ($1, $2)")
                    .bind(&entity)
                    .bind(i64::try_from(seq)?)
                    .execute(&mut *tx)
                    .await?;
                let event = Counted {
                    entity: entity.clone(),
                    seq,
                };
                outbox::enqueue(&mut tx, &topic, &event, &Envelope::new::<Counted>()).await?;
                tx.commit().await?;
                println!("committed {entity} {seq}");
                waker.notify();
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

macro_rules! crash_tests {
    ($($name:ident => $features:expr),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() -> anyhow::Result<()> {
            crash_between_commit_and_publish_loses_nothing(&$features).await
        }
    )*};
}

crash_tests!(
    sigkill_between_commit_and_publish_loses_nothing_on_sqlite => SQLITE,
    sigkill_between_commit_and_publish_loses_nothing_on_postgres => POSTGRES,
);

async fn crash_between_commit_and_publish_loses_nothing(f: &StoreFeatures) -> anyhow::Result<()> {
    let Some(store) = TestStore::open(f).await else {
        return Ok(());
    };
    store.db.migrate("crash", MIGRATIONS).await?;
    let broker = TestBroker::start();
    let topic = unique(&format!("crash-{}", f.name));
    let spec = ChildSpec {
        url: store.url.clone(),
        schema: store.schema.clone(),
        bootstrap: broker.bootstrap(),
        topic: topic.clone(),
    };
    let mut child = Command::new(std::env::current_exe()?)
        .args(["outbox_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, serde_json::to_string(&spec)?)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let commits = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + WAIT;
        let mut commits = 0;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("committed ") {
                commits += 1;
                if commits >= KILL_AFTER || Instant::now() > deadline {
                    break;
                }
            }
        }
        commits
    })
    .await?;
    // SIGKILL: no destructor, no flush, no lease release.
    child.kill()?;
    child.wait()?;
    assert!(commits >= KILL_AFTER, "the child committed ({commits})");

    let committed = committed_rows(&store.db).await?;
    let unsent = outbox::pending(&store.db).await?;
    let before = read_topic(
        &broker.bootstrap(),
        &topic,
        committed.len(),
        Duration::from_secs(3),
    )
    .await;
    assert!(committed.len() >= KILL_AFTER);
    assert!(unsent > 0, "the kill landed between commit and publish");
    assert!(!before.is_empty(), "the child's relay had published some");
    eprintln!(
        "killed after {} commits: {} published, {unsent} committed but unpublished",
        committed.len(),
        before.len()
    );

    // A new relay (after the dead one's lease expired) publishes the rest.
    let publisher = Publisher::kafka(&kafka(&broker.bootstrap()))?;
    let relay = Relay::new(store.db.clone(), publisher)
        .config(relay_config())
        .spawn();
    let deadline = Instant::now() + WAIT;
    while relay.pending().await != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(relay.pending().await, 0, "everything published");
    relay.shutdown().await;

    // Every committed command's event is there, once after de-duplication by message id (a
    // row published and not yet marked when the child died goes out twice), in order per key.
    let messages = read_topic(
        &broker.bootstrap(),
        &topic,
        usize::MAX,
        Duration::from_secs(5),
    )
    .await;
    let mut seen = std::collections::HashSet::new();
    let mut got: std::collections::HashMap<String, Vec<i64>> = Default::default();
    for m in &messages {
        let envelope = Envelope::read_from(&m.headers)?;
        if seen.insert(envelope.message_id) {
            let event: Counted = ferry_toolkit::decode(&m.payload)?;
            got.entry(event.entity)
                .or_default()
                .push(i64::try_from(event.seq)?);
        }
    }
    // The committed rows, read again now: a COMMIT the child sent just before SIGKILL can still
    // land on PostgreSQL after the first read above (the server finishes it without the client),
    // and its event is then rightly published. The database's final state is what was committed.
    let committed = committed_rows(&store.db).await?;
    let mut expected: std::collections::HashMap<String, Vec<i64>> = Default::default();
    for (entity, seq) in committed {
        expected.entry(entity).or_default().push(seq);
    }
    for seqs in expected.values_mut() {
        seqs.sort_unstable();
    }
    assert_eq!(got, expected, "every committed event, in order per key");
    eprintln!(
        "{} events read, {} distinct, {} duplicates from the crash",
        messages.len(),
        seen.len(),
        messages.len() - seen.len()
    );
    Ok(())
}

/// Every (entity, seq) row of the child's `commands` table.
async fn committed_rows(db: &Database) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(sqlx::query("SELECT entity, seq FROM commands")
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()?)
}
