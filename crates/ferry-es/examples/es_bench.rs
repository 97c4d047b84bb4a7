//! Event store benchmark: commands/s on one hot aggregate and across many, and replay speed.
//!
//! ```text
//! cargo run --release -p ferry-es --example es_bench                     # SQLite in a temp dir
//! cargo run --release -p ferry-es --example es_bench -- --database-url postgres://postgres@127.0.0.1:5432/test
//! cargo run --release -p ferry-es --example es_bench -- --events 100000 --commands 1000 --writers 8
//! ```
//!
//! Every command is the full path a service takes: load (snapshot + events after it), decide,
//! append the event and its outbox row in one transaction (SQLite: WAL, `synchronous=FULL`,
//! so each command is an fsynced commit), snapshot every 100 events, retry on conflict.
//! Replay rebuilds a read model (batches of 1000 events per transaction) from a store of
//! `--events` events: once with one upsert per event (a naive projection), once with one upsert
//! per account per batch (`Projection::apply_batch`), and once with a projection that writes
//! nothing, to separate reading and decoding from the read model's writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_es::{
    Aggregate, CommandHandler, Event, EventStore, Metadata, Outbox, Progress, Projection,
    Projector, Recorded,
};
use ferry_toolkit::Message;
use ferry_toolkit::sql::Database;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
    deposits: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deposited {
    account: String,
    amount: i64,
}

impl Message for Deposited {
    const TYPE: &'static str = "Deposited";
    fn key(&self) -> String {
        self.account.clone()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum AccountEvent {
    Deposited(Deposited),
}

impl Event for AccountEvent {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }

    async fn publish(&self, outbox: &mut Outbox<'_>) -> ferry_es::Result<()> {
        let AccountEvent::Deposited(e) = self;
        outbox.enqueue(e).await
    }
}

struct Deposit {
    account: String,
    amount: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("a deposit must be positive")]
struct NotPositive;

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = Deposit;
    type Event = AccountEvent;
    type Error = NotPositive;

    fn decide(&self, command: &Deposit) -> Result<Vec<AccountEvent>, NotPositive> {
        if command.amount <= 0 {
            return Err(NotPositive);
        }
        Ok(vec![AccountEvent::Deposited(Deposited {
            account: command.account.clone(),
            amount: command.amount,
        })])
    }

    fn evolve(&mut self, event: &AccountEvent) {
        let AccountEvent::Deposited(e) = event;
        self.balance += e.amount;
        self.deposits += 1;
    }
}

/// Per-account balances, one upsert per event.
struct Balances;

impl Projection for Balances {
    type Event = AccountEvent;

    fn name(&self) -> &str {
        "balances"
    }

    fn aggregate_type(&self) -> &str {
        Account::TYPE
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &Recorded<AccountEvent>,
    ) -> ferry_es::Result<()> {
        let AccountEvent::Deposited(e) = &event.event;
        sqlx::query(
            "INSERT INTO balances (account, balance, deposits) VALUES ($1, $2, 1)
             ON CONFLICT (account) DO UPDATE SET balance = balances.balance + excluded.balance,
             deposits = balances.deposits + 1",
        )
        .bind(&event.stream_id)
        .bind(e.amount)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn reset(&self, conn: &mut AnyConnection) -> ferry_es::Result<()> {
        sqlx::query("DELETE FROM balances").execute(conn).await?;
        Ok(())
    }
}

/// The same read model, written with one upsert per account per batch.
struct BatchedBalances;

impl Projection for BatchedBalances {
    type Event = AccountEvent;

    fn name(&self) -> &str {
        "balances-batched"
    }

    fn aggregate_type(&self) -> &str {
        Account::TYPE
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &Recorded<AccountEvent>,
    ) -> ferry_es::Result<()> {
        Balances.apply(conn, event).await
    }

    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[Recorded<AccountEvent>],
    ) -> ferry_es::Result<()> {
        // Sum per account first; the order of accounts does not matter, only the sums.
        let mut sums: std::collections::BTreeMap<&str, (i64, i64)> = Default::default();
        for event in events {
            let AccountEvent::Deposited(e) = &event.event;
            let sum = sums.entry(&event.stream_id).or_default();
            sum.0 += e.amount;
            sum.1 += 1;
        }
        for (account, (amount, count)) in sums {
            sqlx::query(
                "INSERT INTO balances (account, balance, deposits) VALUES ($1, $2, $3)
                 ON CONFLICT (account) DO UPDATE SET balance = balances.balance + excluded.balance,
                 deposits = balances.deposits + excluded.deposits",
            )
            .bind(account)
            .bind(amount)
            .bind(count)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn reset(&self, conn: &mut AnyConnection) -> ferry_es::Result<()> {
        Balances.reset(conn).await
    }
}

/// Reads and decodes, writes nothing: the floor of replay's cost.
struct Discard(AtomicU64);

impl Projection for Discard {
    type Event = AccountEvent;

    fn name(&self) -> &str {
        "discard"
    }

    fn aggregate_type(&self) -> &str {
        Account::TYPE
    }

    async fn apply(
        &self,
        _conn: &mut AnyConnection,
        event: &Recorded<AccountEvent>,
    ) -> ferry_es::Result<()> {
        let AccountEvent::Deposited(e) = &event.event;
        self.0.fetch_add(e.amount as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn reset(&self, _conn: &mut AnyConnection) -> ferry_es::Result<()> {
        Ok(())
    }
}

const READ_MODEL: &[(i64, &str, &str)] = &[(
    1,
    "balances",
    "CREATE TABLE balances (account TEXT PRIMARY KEY, balance BIGINT NOT NULL, deposits BIGINT NOT NULL)",
)];

struct Args {
    database_url: Option<String>,
    events: u64,
    commands: u64,
    writers: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        database_url: None,
        events: 1_000_000,
        commands: 2_000,
        writers: 8,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--database-url" => args.database_url = Some(value()?),
            "--events" => args.events = value()?.parse()?,
            "--commands" => args.commands = value()?.parse()?,
            "--writers" => args.writers = value()?.parse::<u64>()?.max(1),
            "-h" | "--help" => {
                println!("es_bench [--database-url URL] [--events N] [--commands N] [--writers N]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let schema = format!("es_bench_{}", std::process::id());
    let (db, backend) = match &args.database_url {
        Some(url) => (
            Database::connect_in_schema(url, &schema).await?,
            "PostgreSQL",
        ),
        None => (
            Database::connect(&Database::sqlite_url(dir.path(), "bench")).await?,
            "SQLite (WAL, synchronous=FULL)",
        ),
    };
    ferry_es::migrate(&db).await?;
    ferry_es::migrate_projections(&db).await?;
    db.migrate("es-bench", READ_MODEL).await?;
    println!("backend: {backend}");

    let result = run(&db, &args).await;
    if let Some(url) = &args.database_url {
        db.close().await;
        let admin = Database::connect(url).await?;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(admin.pool())
            .await?;
    }
    result
}

async fn run(db: &Database, args: &Args) -> anyhow::Result<()> {
    let store = EventStore::new(db.clone());
    let handler = CommandHandler::<Account>::new(store.clone())
        .with_outbox("accounts")
        .with_snapshots_every(100)
        .with_max_retries(1_000);

    // One hot aggregate: one writer; `writers` through one handler (they take turns in
    // process); `writers` handlers, as if `writers` replicas (they race and retry).
    let one = [handler.clone()];
    let (rate, retries) = commands(&one, args.commands, 1, |_| "hot-1".into()).await?;
    println!(
        "hot aggregate, 1 writer:            {rate:>7.0} commands/s ({retries} conflict retries)"
    );
    let (rate, retries) = commands(&one, args.commands, args.writers, |_| "hot-2".into()).await?;
    println!(
        "hot aggregate, {} writers, 1 handler: {rate:>7.0} commands/s ({retries} conflict retries)",
        args.writers
    );
    let replicas: Vec<_> = (0..args.writers)
        .map(|_| {
            CommandHandler::<Account>::new(store.clone())
                .with_outbox("accounts")
                .with_snapshots_every(100)
                .with_max_retries(1_000)
        })
        .collect();
    let (rate, retries) =
        commands(&replicas, args.commands, args.writers, |_| "hot-3".into()).await?;
    println!(
        "hot aggregate, {} replicas:          {rate:>7.0} commands/s ({retries} conflict retries)",
        args.writers
    );
    // Many aggregates: command i on account i % 1000.
    let (rate, retries) = commands(&one, args.commands, args.writers, |i| {
        format!("acct-{}", i % 1000)
    })
    .await?;
    println!(
        "1000 aggregates, {} writers:         {rate:>7.0} commands/s ({retries} conflict retries)",
        args.writers
    );

    // Replay: load `events` events (1000 per stream, batches of 1000 per append), then rebuild.
    let start = Instant::now();
    let loader = ProgressBar::new(args.events).with_style(style("loading"));
    let per_stream = 1000u64;
    let mut loaded = 0;
    let mut stream = 0;
    while loaded < args.events {
        let n = per_stream.min(args.events - loaded);
        let events = (0..n)
            .map(|i| {
                AccountEvent::Deposited(Deposited {
                    account: format!("bulk-{stream}"),
                    amount: i as i64 + 1,
                })
            })
            .collect();
        store
            .append(
                &format!("bulk-{stream}"),
                Account::TYPE,
                0,
                events,
                &Metadata::default(),
            )
            .await?;
        loaded += n;
        stream += 1;
        loader.set_position(loaded);
    }
    loader.finish_and_clear();
    let load = start.elapsed();
    println!(
        "loaded {} events in {:.1} s: {:>8.0} events/s appended (1000 per transaction)",
        args.events,
        load.as_secs_f64(),
        args.events as f64 / load.as_secs_f64()
    );

    let total_events = store.count_after(Account::TYPE, 0).await?;
    let projector = Projector::new(store.clone(), db.clone(), Balances).with_batch_size(1000);
    let (applied, took) = replay(&projector, total_events).await?;
    println!(
        "replay into a read model, one upsert per event: {applied} events in {:.1} s: {:>8.0} events/s",
        took.as_secs_f64(),
        applied as f64 / took.as_secs_f64()
    );
    let batched = Projector::new(store.clone(), db.clone(), BatchedBalances).with_batch_size(1000);
    let (applied, took) = replay(&batched, total_events).await?;
    println!(
        "replay into the read model, one upsert per account per batch: {applied} events in {:.1} s: {:>8.0} events/s",
        took.as_secs_f64(),
        applied as f64 / took.as_secs_f64()
    );
    let discard =
        Projector::new(store, db.clone(), Discard(AtomicU64::new(0))).with_batch_size(1000);
    let (applied, took) = replay(&discard, total_events).await?;
    println!(
        "replay, read + decode only: {applied} events in {:.1} s: {:>8.0} events/s",
        took.as_secs_f64(),
        applied as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// Runs `count` deposits from `writers` concurrent tasks (task `w` uses handler
/// `w % handlers.len()`), command `i` on stream `stream(i)`. Returns commands/s and the number
/// of conflict retries.
async fn commands(
    handlers: &[CommandHandler<Account>],
    count: u64,
    writers: u64,
    stream: impl Fn(u64) -> String,
) -> anyhow::Result<(f64, u64)> {
    let streams: Arc<Vec<String>> = Arc::new((0..count).map(stream).collect());
    let next = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let handler = handlers[w as usize % handlers.len()].clone();
        let (next, retries) = (next.clone(), retries.clone());
        let streams = streams.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                let account = &streams[i as usize];
                let committed = handler
                    .execute(
                        account,
                        &Deposit {
                            account: account.clone(),
                            amount: 1,
                        },
                    )
                    .await?;
                retries.fetch_add(u64::from(committed.attempts - 1), Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    Ok((rate, retries.load(Ordering::Relaxed)))
}

async fn replay<P: Projection>(
    projector: &Projector<P>,
    total: u64,
) -> anyhow::Result<(u64, Duration)> {
    let bar = ProgressBar::new(total).with_style(style(projector.projection().name()));
    let start = Instant::now();
    let applied = projector
        .replay(|p: Progress| {
            bar.set_length(p.total);
            bar.set_position(p.applied);
        })
        .await?;
    bar.finish_and_clear();
    Ok((applied, start.elapsed()))
}

fn style(label: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{label:>10} [{{bar:40}}] {{pos}}/{{len}} events, {{per_sec}}, eta {{eta}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}
