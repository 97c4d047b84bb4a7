//! What the store conformance suites share: the two backends, a small aggregate and a
//! projection of it.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ferry_es::{Aggregate, Event, Outbox, Projection, Recorded};
use ferry_toolkit::Message;
use ferry_toolkit::sql::Database;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

/// Every test gives up after this long instead of hanging CI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `test` on a fresh SQLite database in a temporary directory.
pub async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Database) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_in(dir.path(), "store").await;
    tokio::time::timeout(TEST_TIMEOUT, test(db))
        .await
        .expect("the test timed out");
}

/// A migrated SQLite database `<dir>/<name>.db`.
pub async fn sqlite_in(dir: &std::path::Path, name: &str) -> Database {
    let db = Database::connect(&Database::sqlite_url(dir, name))
        .await
        .unwrap();
    migrate(&db).await;
    db
}

/// Runs `test` in a fresh schema of the PostgreSQL database named by
/// `FERRY_TEST_POSTGRES_URL`, then drops the schema; skips when the variable is unset.
pub async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Database) -> Fut,
    Fut: Future<Output = ()>,
{
    let Ok(url) = std::env::var("FERRY_TEST_POSTGRES_URL") else {
        println!("skipped: FERRY_TEST_POSTGRES_URL not set");
        return;
    };
    let schema = format!("es_test_{}", uuid::Uuid::new_v4().simple());
    let db = Database::connect_in_schema(&url, &schema).await.unwrap();
    migrate(&db).await;
    tokio::time::timeout(TEST_TIMEOUT, test(db.clone()))
        .await
        .expect("the test timed out");
    db.close().await;
    let admin = Database::connect(&url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(admin.pool())
        .await
        .unwrap();
    admin.close().await;
}

async fn migrate(db: &Database) {
    ferry_es::migrate(db).await.unwrap();
    ferry_es::migrate_projections(db).await.unwrap();
    db.migrate("es-test", READ_MODEL).await.unwrap();
}

/// The read model of [`Totals`].
const READ_MODEL: &[(i64, &str, &str)] = &[(
    1,
    "totals",
    "CREATE TABLE totals (stream_id TEXT PRIMARY KEY, total BIGINT NOT NULL, events BIGINT NOT NULL)",
)];

/// A counter that only goes up, the test aggregate.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub total: u64,
}

/// The counter's one event, also a message so it can go through the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Added {
    pub amount: u64,
}

impl Message for Added {
    const TYPE: &'static str = "Added";
    fn key(&self) -> String {
        "counter".into()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CounterEvent {
    Added(Added),
    /// An event with no message mapping: publishing it fails.
    Unpublishable(u64),
}

impl Event for CounterEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CounterEvent::Added(_) => "Added",
            CounterEvent::Unpublishable(_) => "Unpublishable",
        }
    }

    fn schema_version(&self) -> u32 {
        2
    }

    async fn publish(&self, outbox: &mut Outbox<'_>) -> ferry_es::Result<()> {
        match self {
            CounterEvent::Added(e) => outbox.enqueue(e).await,
            CounterEvent::Unpublishable(_) => Err(ferry_es::Error::NotPublishable {
                event_type: "Unpublishable",
            }),
        }
    }
}

/// Add `amount`; if `rendezvous` is set, the first decision waits there for the other
/// commands, so they all decide on the same version and race to append.
#[derive(Debug, Default)]
pub struct Add {
    pub amount: u64,
    pub unpublishable: bool,
    pub rendezvous: Option<Arc<Rendezvous>>,
    pub decided: AtomicBool,
}

impl Add {
    pub fn new(amount: u64) -> Add {
        Add {
            amount,
            ..Add::default()
        }
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("cannot add zero")]
pub struct AddZero;

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    type Command = Add;
    type Event = CounterEvent;
    type Error = AddZero;

    fn decide(&self, command: &Add) -> Result<Vec<CounterEvent>, AddZero> {
        if !command.decided.swap(true, Ordering::SeqCst)
            && let Some(rendezvous) = &command.rendezvous
        {
            // Hands this worker's other tasks to another thread while it blocks, so the
            // commands still loading can reach the rendezvous.
            tokio::task::block_in_place(|| rendezvous.wait());
        }
        match command.amount {
            0 => Err(AddZero),
            n if command.unpublishable => Ok(vec![CounterEvent::Unpublishable(n)]),
            amount => Ok(vec![CounterEvent::Added(Added { amount })]),
        }
    }

    fn evolve(&mut self, event: &CounterEvent) {
        match event {
            CounterEvent::Added(e) => self.total += e.amount,
            CounterEvent::Unpublishable(n) => self.total += n,
        }
    }
}

/// A barrier with a deadline: `n` threads wait until all arrived (or 10 s passed, so a broken
/// test fails instead of hanging).
#[derive(Debug)]
pub struct Rendezvous {
    arrived: Mutex<usize>,
    all: Condvar,
    n: usize,
}

impl Rendezvous {
    pub fn new(n: usize) -> Arc<Rendezvous> {
        Arc::new(Rendezvous {
            arrived: Mutex::new(0),
            all: Condvar::new(),
            n,
        })
    }

    fn wait(&self) {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.all.notify_all();
        let (_arrived, timeout) = self
            .all
            .wait_timeout_while(arrived, Duration::from_secs(10), |a| *a < self.n)
            .unwrap();
        assert!(!timeout.timed_out(), "not every command reached decide");
    }
}

/// Per stream: the sum of amounts and the number of events, in `totals`. Fails on the event at
/// `fail_at` (a global position) while that is non-zero.
#[derive(Debug, Default)]
pub struct Totals {
    pub name: String,
    pub fail_at: AtomicU64,
}

impl Totals {
    pub fn named(name: &str) -> Totals {
        Totals {
            name: name.into(),
            fail_at: AtomicU64::new(0),
        }
    }
}

impl Projection for Totals {
    type Event = CounterEvent;

    fn name(&self) -> &str {
        &self.name
    }

    fn aggregate_type(&self) -> &str {
        Counter::TYPE
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &Recorded<CounterEvent>,
    ) -> ferry_es::Result<()> {
        if event.position as u64 == self.fail_at.load(Ordering::SeqCst) {
            return Err(ferry_es::Error::Projection {
                projection: self.name.clone(),
                source: "injected failure".into(),
            });
        }
        let amount = match &event.event {
            CounterEvent::Added(e) => e.amount,
            CounterEvent::Unpublishable(n) => *n,
        };
        sqlx::query(
            "INSERT INTO totals (stream_id, total, events) VALUES ($1, $2, 1)
             ON CONFLICT (stream_id) DO UPDATE SET total = totals.total + excluded.total,
             events = totals.events + 1",
        )
        .bind(&event.stream_id)
        .bind(amount as i64)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn reset(&self, conn: &mut AnyConnection) -> ferry_es::Result<()> {
        sqlx::query("DELETE FROM totals").execute(conn).await?;
        Ok(())
    }
}

/// The `totals` table as (stream, total, events), by stream.
pub async fn totals(db: &Database) -> Vec<(String, i64, i64)> {
    sqlx::query("SELECT stream_id, total, events FROM totals ORDER BY stream_id")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Generates one test per backend for each named async fn taking a `Database`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::on_sqlite(super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::on_postgres(super::$name).await;
                }
            )*
        }
    };
}
