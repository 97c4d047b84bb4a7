//! `ferry bench http`: creates per second and their latency through a system's HTTP command
//! side, at a fixed number of keep-alive connections, optionally beside another implementation
//! of the same API (the original Node course producer) measured the same way in the same run.
//!
//! Each connection is one task with an HTTP client of its own that sends the next create as
//! soon as the previous one is answered (closed loop), so `--connections` is the concurrency.
//! Ferry's side runs in this process: the courses producer (SQLite under a temp directory, or
//! `--database-url`) on the broker at `--brokers`, or on one started here. A 2xx from Ferry
//! means the course is durable and its event will be published; the original answers before
//! its broker has the message.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use ferry_service::ServiceConfig;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::kafka::thousands;

/// Which system's create to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HttpSystem {
    /// POST /api/v1/courses on the courses producer.
    Courses,
}

#[derive(Debug, Args)]
pub struct HttpBenchArgs {
    /// The system.
    #[arg(long, value_enum, default_value_t = HttpSystem::Courses)]
    system: HttpSystem,
    /// Concurrent connections; several (`1,8,64`) run one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    connections: Vec<usize>,
    /// Seconds of load per target and connection count (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The broker Ferry's service uses (default: one started in this process).
    #[arg(long)]
    brokers: Option<String>,
    /// Ferry's database (postgres://...; default: SQLite in a temp directory).
    #[arg(long)]
    database_url: Option<String>,
    /// Base URL of another implementation to measure beside Ferry (e.g. the original Node
    /// producer, `http://127.0.0.1:4100`); its creates/s is printed as the ratio's denominator.
    #[arg(long)]
    original: Option<String>,
}

/// One measured run.
struct Run {
    creates: u64,
    non_2xx: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.creates as f64 / self.elapsed.as_secs_f64()
    }
}

pub async fn bench(args: HttpBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = match &args.brokers {
        Some(_) => None,
        None => Some(super::start_embedded_broker(dir.path()).await?),
    };
    let brokers = match (&args.brokers, &broker) {
        (Some(b), _) => b.clone(),
        (None, Some(b)) => b.bootstrap_servers(),
        (None, None) => unreachable!("a broker was started"),
    };
    let shutdown = CancellationToken::new();
    let mut config = ServiceConfig::new(brokers.clone(), dir.path(), 0);
    config.database_url = args.database_url.clone();
    let HttpSystem::Courses = args.system;
    let service = courses::start_producer(config, shutdown.clone()).await?;
    let ferry = format!("http://{}", service.addr);
    println!(
        "ferry bench http: {:?} creates, {} s per run, broker {brokers}, Ferry on {}",
        args.system,
        args.seconds,
        if args.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite (WAL, synchronous=FULL)"
        }
    );
    let mut serial = 0u64;
    for &connections in &args.connections {
        let mine = load(&ferry, connections, args.seconds, &mut serial).await?;
        print_run("ferry", connections, &mine);
        if let Some(original) = &args.original {
            let theirs = load(original, connections, args.seconds, &mut serial).await?;
            print_run("original", connections, &theirs);
            println!(
                "  ratio at {connections} connections: ferry / original = {:.2}x",
                mine.per_second() / theirs.per_second().max(f64::MIN_POSITIVE)
            );
        }
    }
    shutdown.cancel();
    let _ = service.task.await;
    if let Some(broker) = broker {
        broker.shutdown().await?;
    }
    Ok(())
}

fn print_run(target: &str, connections: usize, run: &Run) {
    let ms = |q: f64| run.latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{target:>8} {connections:>3} connections: {} creates in {:.1} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {} non-2xx, {} errors",
        thousands(run.creates),
        run.elapsed.as_secs_f64(),
        run.per_second(),
        ms(0.5),
        ms(0.99),
        run.latency.max() as f64 / 1000.0,
        run.non_2xx,
        run.errors,
    );
}

/// `connections` closed loops of creates against `base` for one warm-up second (not counted)
/// and then `seconds`.
async fn load(
    base: &str,
    connections: usize,
    seconds: u64,
    serial: &mut u64,
) -> anyhow::Result<Run> {
    let warm_up = Instant::now() + Duration::from_secs(1);
    let end = warm_up + Duration::from_secs(seconds);
    // Every create gets a code no other create of this process used.
    let base_serial = *serial;
    *serial += 1_000_000_000;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let url = format!("{base}/api/v1/courses");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        tasks.spawn(async move {
            let mut latency = Histogram::<u64>::new(3).expect("histogram");
            let (mut creates, mut non_2xx, mut errors) = (0u64, 0u64, 0u64);
            for n in 0u64.. {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let code = format!("H{}", base_serial + (c as u64) * 10_000_000 + n);
                let body = json!({"name": format!("Course {code}"), "code": code, "active": true});
                let answer = client.post(&url).json(&body).send().await;
                let ok = match answer {
                    Ok(a) => {
                        let status = a.status();
                        let _ = a.bytes().await;
                        if status.is_success() {
                            true
                        } else {
                            if sent >= warm_up {
                                non_2xx += 1;
                            }
                            false
                        }
                    }
                    Err(_) => {
                        if sent >= warm_up {
                            errors += 1;
                        }
                        false
                    }
                };
                if ok && sent >= warm_up && Instant::now() <= end {
                    creates += 1;
                    let _ = latency.record(sent.elapsed().as_micros() as u64);
                }
            }
            (latency, creates, non_2xx, errors)
        });
    }
    let mut run = Run {
        creates: 0,
        non_2xx: 0,
        errors: 0,
        elapsed: Duration::from_secs(seconds),
        latency: Histogram::<u64>::new(3)?,
    };
    while let Some(done) = tasks.join_next().await {
        let (latency, creates, non_2xx, errors) = done.context("a load task")?;
        run.latency.add(&latency)?;
        run.creates += creates;
        run.non_2xx += non_2xx;
        run.errors += errors;
    }
    Ok(run)
}
