//! `ferry bench read-side`: how long after an HTTP create answers 2xx the new entity is visible
//! on the read side, at a fixed request rate.
//!
//! Starts a broker and the two services of one system in this process (courses: producer 4000
//! writes, consumer 3000 reads; posts: command 5010 writes, query 5011 reads), then creates
//! entities over HTTP at `--rate` per second. For each one, a task polls the read side's GET
//! every `--poll-ms` from the moment the create answered until it answers 200; the delay
//! recorded is from sending the create to the first 200 (so it includes the create itself, the
//! outbox relay, the broker, the consumer and its transaction). The polling adds read load, as
//! a page watching for its result would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use ferry_service::{ServiceConfig, ServiceHandle};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::kafka::thousands;

/// Which system to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum System {
    /// POST /api/v1/courses on the producer, GET /api/v1/courses/{id} on the consumer.
    Courses,
    /// POST /api/v1/NewPost on the command side, GET /api/v1/PostLookup/byId/{id} on the query side.
    Posts,
}

#[derive(Debug, Args)]
pub struct ReadSideBenchArgs {
    /// The system.
    #[arg(long, value_enum, default_value_t = System::Courses)]
    system: System,
    /// Creates per second.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// How often a waiting task asks the read side, in milliseconds.
    #[arg(long, default_value_t = 2)]
    poll_ms: u64,
}

impl System {
    async fn start(
        self,
        config: &ServiceConfig,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<(ServiceHandle, ServiceHandle)> {
        Ok(match self {
            System::Courses => (
                courses::start_producer(config.clone(), shutdown.clone()).await?,
                courses::start_consumer(config.clone(), shutdown.clone()).await?,
            ),
            System::Posts => {
                let command = posts::start_command(config.clone(), shutdown.clone()).await?;
                let mut config = config.clone();
                config.peers.insert(
                    posts::COMMAND_SERVICE.to_owned(),
                    format!("http://{}", command.addr),
                );
                (command, posts::start_query(config, shutdown.clone()).await?)
            }
        })
    }

    /// The create request for entity `n`: path and body.
    fn create(self, n: u64) -> (&'static str, Value) {
        match self {
            System::Courses => (
                "/api/v1/courses",
                json!({"name": format!("Course {n}"), "code": format!("B{n}"), "active": true}),
            ),
            System::Posts => (
                "/api/v1/NewPost",
                json!({"author": "bench", "message": format!("post {n}")}),
            ),
        }
    }

    /// Where the read side shows entity `id`.
    fn read_path(self, id: &str) -> String {
        match self {
            System::Courses => format!("/api/v1/courses/{id}"),
            System::Posts => format!("/api/v1/PostLookup/byId/{id}"),
        }
    }
}

pub async fn bench(args: ReadSideBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = super::start_embedded_broker(dir.path()).await?;
    let shutdown = CancellationToken::new();
    let config = ServiceConfig::new(broker.bootstrap_servers(), dir.path(), 0);
    let (write_service, read_service) = args.system.start(&config, &shutdown).await?;
    let write = format!("http://{}", write_service.addr);
    let read = format!("http://{}", read_service.addr);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    println!(
        "ferry bench read-side: {:?}, {} creates/s for {} s, polling every {} ms; broker and services in this process, SQLite",
        args.system, args.rate, args.seconds, args.poll_ms
    );

    // Warm up: the consumer joins its group and the first entity goes through.
    let (path, body) = args.system.create(0);
    let id = create(&http, &write, path, &body).await?;
    let first = args.system.read_path(&id);
    let warm = visible(&http, &read, &first, Duration::from_millis(20));
    tokio::time::timeout(Duration::from_secs(30), warm)
        .await
        .context("the first entity never became visible")??;

    let delays = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let creates = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let failures = Arc::new(Mutex::new(0u64));
    let total = args.rate * args.seconds;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=total {
        let at = started + Duration::from_secs_f64((n - 1) as f64 / args.rate as f64);
        tokio::time::sleep_until(at.into()).await;
        let (http, write, read) = (http.clone(), write.clone(), read.clone());
        let (delays, creates, failures) = (delays.clone(), creates.clone(), failures.clone());
        let (system, poll) = (args.system, Duration::from_millis(args.poll_ms));
        tasks.spawn(async move {
            let sent = Instant::now();
            let (path, body) = system.create(n);
            let seen = async {
                let id = create(&http, &write, path, &body).await?;
                let _ = creates.lock().record(sent.elapsed().as_micros() as u64);
                visible(&http, &read, &system.read_path(&id), poll).await
            };
            match tokio::time::timeout(Duration::from_secs(30), seen).await {
                Ok(Ok(())) => {
                    let _ = delays.lock().record(sent.elapsed().as_micros() as u64);
                }
                _ => *failures.lock() += 1,
            }
        });
    }
    let offered = started.elapsed();
    while tasks.join_next().await.is_some() {}
    report(
        &delays.lock(),
        &creates.lock(),
        *failures.lock(),
        total,
        offered,
    );
    // Services first (their consumers leave the group, relays finish), then the broker.
    shutdown.cancel();
    let _ = write_service.task.await;
    let _ = read_service.task.await;
    broker.shutdown().await?;
    Ok(())
}

/// Prints the delays, create -> visible and the create alone.
fn report(
    visible: &Histogram<u64>,
    creates: &Histogram<u64>,
    failures: u64,
    total: u64,
    offered: Duration,
) {
    println!(
        "{} created in {:.1} s ({:.0}/s offered), {failures} failed or not visible within 30 s",
        thousands(visible.len()),
        offered.as_secs_f64(),
        total as f64 / offered.as_secs_f64(),
    );
    for (what, h) in [
        ("create -> visible on the read side:", visible),
        ("the create alone (2xx answered):   ", creates),
    ] {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{what} p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            h.max() as f64 / 1000.0
        );
    }
}

/// Sends a create and answers the new entity's id.
async fn create(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<String> {
    let answer = http.post(format!("{base}{path}")).json(body).send().await?;
    if !answer.status().is_success() {
        bail!("create answered {}", answer.status());
    }
    let created: Value = answer.json().await?;
    created["id"]
        .as_str()
        .map(str::to_owned)
        .context("the create answer has no id")
}

/// Polls `path` until it answers 200.
async fn visible(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    poll: Duration,
) -> anyhow::Result<()> {
    loop {
        let answer = http.get(format!("{base}{path}")).send().await?;
        if answer.status().is_success() {
            return Ok(());
        }
        tokio::time::sleep(poll).await;
    }
}
