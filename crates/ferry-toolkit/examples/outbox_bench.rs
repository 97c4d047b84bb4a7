//! Outbox benchmark: committed commands/s through to published events/s, and the delay from
//! commit to the broker's acknowledgement of the publish (p50/p99), on SQLite and PostgreSQL.
//!
//! ```text
//! cargo run --release -p ferry-toolkit --example outbox_bench -- [--commands N] [--keys K]
//!     [--writers W] [--rate R] [--seconds S] [--store sqlite|postgres|both]
//! ```
//!
//! It starts the built-in broker in-process (temp directory, fsync on, acks=all), then per
//! store:
//! 1. **Throughput**: W writer tasks commit N commands as fast as they can (each: one row of
//!    state and one outbox row, one transaction, then a relay wake-up) while the relay publishes
//!    through the Kafka protocol. Commits/s = N / time of the writers; published/s = N / time
//!    until the last publish was acknowledged.
//! 2. **Delay**: commands at a steady R/s for S seconds; for each, the time from its commit
//!    returning to its publish being acknowledged by the broker.
//!
//! PostgreSQL is read from `FERRY_TEST_POSTGRES_URL` or `DATABASE_URL` (a fresh schema, dropped
//! afterwards); without either it is skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use ferry_broker::BrokerConfig;
use ferry_toolkit::kafka::{KafkaConfig, KafkaSender};
use ferry_toolkit::sql::Database;
use ferry_toolkit::sql::outbox::{self, Relay, RelayHandle};
use ferry_toolkit::{
    Envelope, Message, OutgoingMessage, Publisher, Receipt, SendError, Sender, header,
};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Deposited {
    account: String,
    seq: u64,
    amount_cents: u64,
}

impl Message for Deposited {
    const TYPE: &'static str = "bench.deposited";
    fn key(&self) -> String {
        self.account.clone()
    }
}

const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "deposits",
    "CREATE TABLE deposits (account TEXT NOT NULL, seq BIGINT NOT NULL, amount_cents BIGINT NOT NULL, PRIMARY KEY (account, seq))",
)];

/// The Kafka sender, noting when each message id was acknowledged.
#[derive(Debug)]
struct Timed {
    inner: KafkaSender,
    acked: Arc<Mutex<HashMap<String, Instant>>>,
}

#[async_trait]
impl Sender for Timed {
    async fn send(&self, message: OutgoingMessage) -> Result<Receipt, SendError> {
        let id = message
            .headers
            .get_str(header::MESSAGE_ID)
            .unwrap_or_default()
            .to_owned();
        let receipt = self.inner.send(message).await?;
        self.acked.lock().insert(id, Instant::now());
        Ok(receipt)
    }
}

struct Args {
    commands: u64,
    keys: u64,
    writers: u64,
    rate: u64,
    seconds: u64,
    store: String,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        commands: 20_000,
        keys: 100,
        writers: 16,
        rate: 500,
        seconds: 10,
        store: "both".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--commands" => args.commands = value.parse()?,
            "--keys" => args.keys = value.parse()?,
            "--writers" => args.writers = value.parse()?,
            "--rate" => args.rate = value.parse()?,
            "--seconds" => args.seconds = value.parse()?,
            "--store" => args.store = value,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,librdkafka=error".into()),
        )
        .try_init();
    // The broker on a runtime of its own, as it runs in `ferry up`.
    let data = tempfile::tempdir()?;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let config = BrokerConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    let broker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let handle = ferry_broker::start(config).await.expect("broker starts");
            addr_tx.send(handle.local_addr()).expect("main waits");
            let _ = stop_rx.await;
            let _ = handle.shutdown().await;
        });
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(30))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!(
            "outbox bench: {} commands over {} keys, {} writers; delays at a steady {}/s for {} s. Broker: built-in, acks=all, fsync on.",
            args.commands, args.keys, args.writers, args.rate, args.seconds
        );
        println!(
            "| store | commits/s | published/s | commit→publish p50 | p99 | max | command (begin→commit) p50 / p99 |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        if args.store == "sqlite" || args.store == "both" {
            let dir = tempfile::tempdir()?;
            let db = Database::connect(&Database::sqlite_url(dir.path(), "bench")).await?;
            run("SQLite (WAL, synchronous=FULL)", db, &addr.to_string(), &args).await?;
        }
        if args.store == "postgres" || args.store == "both" {
            let url = std::env::var("FERRY_TEST_POSTGRES_URL")
                .or_else(|_| std::env::var("DATABASE_URL"))
                .ok();
            match url {
                Some(url) => {
                    let schema = format!("ferry_bench_{}", uuid::Uuid::now_v7().simple());
                    let db = Database::connect_in_schema(&url, &schema).await?;
                    let result = run("PostgreSQL", db, &addr.to_string(), &args).await;
                    let admin = Database::connect(&url).await?;
                    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                        .execute(admin.pool())
                        .await?;
                    result?;
                }
                None => println!("| PostgreSQL | skipped: FERRY_TEST_POSTGRES_URL / DATABASE_URL not set | | | | | |"),
            }
        }
        anyhow::Ok(())
    })?;
    let _ = stop_tx.send(());
    let _ = broker.join();
    Ok(())
}

async fn run(name: &str, db: Database, bootstrap: &str, args: &Args) -> anyhow::Result<()> {
    db.migrate("bench", MIGRATIONS).await?;
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let sender = Timed {
        inner: KafkaSender::new(&KafkaConfig::new(bootstrap))?,
        acked: acked.clone(),
    };
    let relay = Relay::start(db.clone(), Publisher::new(sender));
    let topic = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let committed = Arc::new(Mutex::new(HashMap::new()));

    // Warm-up: topic creation, connections, the relay's lease.
    command(&db, &relay, &topic, "warm-up", 0, &committed).await?;
    wait_published(&acked, 1).await?;
    acked.lock().clear();
    committed.lock().clear();

    // 1. Throughput.
    let started = Instant::now();
    let mut writers = Vec::new();
    let per_writer = args.commands / args.writers;
    for w in 0..args.writers {
        let (db, topic, committed) = (db.clone(), topic.clone(), committed.clone());
        let waker = relay.waker();
        let keys = args.keys;
        writers.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let n = w * per_writer + i;
                let account = format!("account-{}", n % keys);
                let seq = n / keys;
                let id = stage(&db, &topic, &account, seq).await?;
                committed.lock().insert(id, Instant::now());
                waker.notify();
            }
            anyhow::Ok(())
        }));
    }
    for w in writers {
        w.await??;
    }
    let total = per_writer * args.writers;
    let commit_time = started.elapsed();
    wait_published(&acked, total as usize).await?;
    let publish_time = started.elapsed();
    let throughput = (
        total as f64 / commit_time.as_secs_f64(),
        total as f64 / publish_time.as_secs_f64(),
    );

    // 2. Delay at a steady rate.
    acked.lock().clear();
    committed.lock().clear();
    let count = args.rate * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = Vec::new();
    for n in 0..count {
        ticker.tick().await;
        let (db, relay_waker, topic, committed) =
            (db.clone(), relay.waker(), topic.clone(), committed.clone());
        let keys = args.keys;
        inflight.push(tokio::spawn(async move {
            let account = format!("steady-{}", n % keys);
            let began = Instant::now();
            let id = stage(&db, &topic, &account, n / keys).await?;
            let now = Instant::now();
            committed.lock().insert(id, now);
            relay_waker.notify();
            anyhow::Ok(now - began)
        }));
    }
    let mut commits = Histogram::<u64>::new_with_max(60_000_000, 3)?;
    for t in inflight {
        let took = t.await??;
        commits.record(u64::try_from(took.as_micros())?.max(1))?;
    }
    wait_published(&acked, count as usize).await?;
    let mut delays = Histogram::<u64>::new_with_max(60_000_000, 3)?;
    {
        let committed = committed.lock();
        let acked = acked.lock();
        for (id, at) in committed.iter() {
            let acked_at = acked.get(id).context("every committed event published")?;
            let micros = acked_at.saturating_duration_since(*at).as_micros();
            delays.record(u64::try_from(micros)?.max(1))?;
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "| {name} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} / {:.1} ms |",
        throughput.0,
        throughput.1,
        ms(&delays, 0.5),
        ms(&delays, 0.99),
        delays.max() as f64 / 1000.0,
        ms(&commits, 0.5),
        ms(&commits, 0.99),
    );
    // The relay marks a batch sent right after its last acknowledgement.
    let deadline = Instant::now() + Duration::from_secs(30);
    while outbox::pending(&db).await? != 0 {
        anyhow::ensure!(Instant::now() < deadline, "rows left unmarked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    relay.shutdown().await;
    db.close().await;
    Ok(())
}

async fn command(
    db: &Database,
    relay: &RelayHandle,
    topic: &str,
    account: &str,
    seq: u64,
    committed: &Mutex<HashMap<String, Instant>>,
) -> anyhow::Result<()> {
    let id = stage(db, topic, account, seq).await?;
    committed.lock().insert(id, Instant::now());
    relay.notify();
    Ok(())
}

/// One command: the state change and its event, one transaction. Returns the event's id.
async fn stage(db: &Database, topic: &str, account: &str, seq: u64) -> anyhow::Result<String> {
    let event = Deposited {
        account: account.to_owned(),
        seq,
        amount_cents: 100 + seq,
    };
    let envelope = Envelope::new::<Deposited>();
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO deposits (account, seq, amount_cents) VALUES ($1, $2, $3)")
        .bind(account)
        .bind(i64::try_from(seq)?)
        .bind(i64::try_from(event.amount_cents)?)
        .execute(&mut *tx)
        .await?;
    outbox::enqueue(&mut tx, topic, &event, &envelope).await?;
    tx.commit().await?;
    Ok(envelope.message_id.to_string())
}

async fn wait_published(acked: &Mutex<HashMap<String, Instant>>, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while acked.lock().len() < n {
        anyhow::ensure!(Instant::now() < deadline, "not all published within 300 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}
