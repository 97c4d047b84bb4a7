//! One process serves every service under `ferry up`, so one service's idle clients must not
//! starve another: 911 idle connections to the dashboard once used up the process's file
//! descriptors and the courses services stopped answering. Here the dashboard and the courses
//! consumer run in this process on the real broker, as under `ferry up`; the dashboard gets 1,000
//! connections that send nothing or only part of a request head, and the courses consumer must
//! answer within its normal time meanwhile. The dashboard's limits are small so that the test
//! sees its cap and both timeouts at work within seconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_service::HttpLimits;
use ferry_testkit::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IDLE: usize = 500;
const PARTIAL: usize = 500;
/// Part of a request head, never finished (slowloris).
const PARTIAL_HEAD: &[u8] = b"GET /health HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n";

/// The dashboard's limits: a cap well under 1,000 and short timeouts.
const LIMITS: HttpLimits = HttpLimits {
    max_connections: 300,
    idle_timeout: Duration::from_secs(2),
    header_read_timeout: Duration::from_secs(1),
};

/// Early-close tolerance: timers and clocks on two sides of a socket.
const SLACK: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_idle_connections_do_not_starve_another_service() -> anyhow::Result<()> {
    // Both ends of 1,000 connections live in this process, as `ferry up`'s would with its
    // clients elsewhere: take the open-files limit the way `ferry` does at start.
    let limit = ferry_service::raise_open_files_limit()?;
    anyhow::ensure!(
        limit >= 4096,
        "this test needs about 2,500 open files; the hard limit here is {limit}"
    );
    let harness = Harness::start().await;
    let courses = courses::start_consumer(harness.config(), harness.token()).await?;
    let courses_url = format!("http://{}", courses.addr);
    let mut config = harness.config();
    config.http = LIMITS;
    let dashboard = dashboard::start(
        config,
        vec![dashboard::Upstream::new("courses-consumer", &courses_url)],
        harness.token(),
    )
    .await?;

    // A new connection for every request, so that each one needs the courses consumer to accept.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()?;
    let courses_list = format!("{courses_url}/api/v1/courses");
    for _ in 0..3 {
        timed_get(&client, &courses_list).await?; // warm up
    }
    let mut normal = Duration::ZERO;
    for _ in 0..10 {
        normal = normal.max(timed_get(&client, &courses_list).await?);
    }
    // "Its normal time": the slowest of ten requests before, with room for a loaded machine.
    let bound = normal * 4 + Duration::from_millis(250);
    let fds_before = open_files();

    // The flood: idle connections and half-sent heads, interleaved. Those over the cap wait in
    // the listen backlog, where the kernel completes their handshake.
    let mut watchers = Vec::new();
    let flood_started = Instant::now();
    for i in 0..IDLE + PARTIAL {
        let partial = i % 2 == 1;
        // Before connecting: the dashboard's clocks for this connection start later.
        let opened = Instant::now();
        let mut stream = TcpStream::connect(dashboard.addr)
            .await
            .with_context(|| format!("connection {i} to the dashboard"))?;
        if partial {
            stream.write_all(PARTIAL_HEAD).await?;
        }
        watchers.push(tokio::spawn(watch_close(stream, partial, opened)));
    }

    // While the dashboard is full: the courses consumer answers in its normal time, the dashboard
    // holds no more connections than its cap, and the process no more sockets than that.
    let flood_took = flood_started.elapsed();
    let mut held_max = 0.0f64;
    let mut fds_max = 0usize;
    let mut slowest = Duration::ZERO;
    for probe in 0..20 {
        let took = timed_get(&client, &courses_list)
            .await
            .with_context(|| format!("courses request {probe} while the dashboard is flooded"))?;
        anyhow::ensure!(
            took <= bound,
            "courses request {probe} took {took:?} while the dashboard was flooded; normal is {normal:?}"
        );
        slowest = slowest.max(took);
        // The flooded dashboard cannot be scraped, and each service's /metrics shows only its
        // own series: read the process's recorder, where every service records.
        let metrics = ferry_toolkit::ops::metrics::render();
        held_max = held_max.max(
            metric(
                &metrics,
                ferry_service::CONNECTIONS,
                &[("service", "dashboard")],
            )
            .unwrap_or(0.0),
        );
        if let (Some(before), Some(now)) = (fds_before, open_files()) {
            fds_max = fds_max.max(now.saturating_sub(before));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "flood opened in {flood_took:?}; courses: slowest of 10 before {normal:?}, of 20 during the flood {slowest:?}; \
         dashboard held at most {held_max} connections; process opened at most {fds_max} more files"
    );
    anyhow::ensure!(
        held_max > 0.0,
        "the dashboard's connection gauge was never seen"
    );
    anyhow::ensure!(
        held_max <= LIMITS.max_connections as f64,
        "the dashboard held {held_max} connections; its cap is {}",
        LIMITS.max_connections
    );
    if fds_before.is_some() {
        // Our 1,000 client sockets, the dashboard's accepted ones (at most its cap), and a few
        // the services open meanwhile; without the cap this would be about 2,000.
        let most = IDLE + PARTIAL + LIMITS.max_connections + 100;
        anyhow::ensure!(
            fds_max <= most,
            "the process opened {fds_max} more files during the flood (at most {most} expected)"
        );
    }

    // Every one of the 1,000 is closed by the dashboard, none before its timeout.
    for watcher in watchers {
        let (partial, after) = watcher.await??;
        let (timeout, what) = if partial {
            (LIMITS.header_read_timeout, "half-sent head")
        } else {
            (LIMITS.idle_timeout, "idle connection")
        };
        anyhow::ensure!(
            after + SLACK >= timeout,
            "a {what} was closed after {after:?}, before its timeout of {timeout:?}"
        );
    }
    let metrics = ferry_toolkit::ops::metrics::render();
    let closed = |reason| {
        metric(
            &metrics,
            ferry_service::CONNECTIONS_CLOSED,
            &[("service", "dashboard"), ("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    anyhow::ensure!(
        closed("idle") >= IDLE as f64,
        "{} idle closes counted",
        closed("idle")
    );
    anyhow::ensure!(
        closed("header_timeout") >= PARTIAL as f64,
        "{} header timeouts counted",
        closed("header_timeout")
    );
    anyhow::ensure!(
        metric(
            &metrics,
            ferry_service::CAP_REACHED,
            &[("service", "dashboard")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "the dashboard's cap was reached"
    );

    // And the dashboard itself serves again.
    let health = client
        .get(format!("http://{}/health", dashboard.addr))
        .send()
        .await?;
    anyhow::ensure!(
        health.status().is_success(),
        "dashboard /health: {health:?}"
    );

    harness.shutdown.cancel();
    dashboard.task.await?;
    courses.task.await?;
    Ok(())
}

/// GET `url`, expect a 2xx, and return how long it took.
async fn timed_get(client: &reqwest::Client, url: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = client.get(url).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.bytes().await?;
    Ok(started.elapsed())
}

/// Waits for the server to close `stream` (at most 60 s) and returns how long after `opened`
/// it did.
async fn watch_close(
    mut stream: TcpStream,
    partial: bool,
    opened: Instant,
) -> anyhow::Result<(bool, Duration)> {
    let peer: SocketAddr = stream.peer_addr()?;
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Ok((partial, opened.elapsed())),
        Ok(Ok(n)) => anyhow::bail!("{peer} answered {n} bytes to a request never completed"),
        Err(_) => anyhow::bail!("{peer} kept a connection open for 60 s"),
    }
}

/// The value of the Prometheus sample `name{labels...}` in `text`, if present.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        let inside = rest.strip_prefix('{')?.strip_suffix('}')?;
        let all = labels
            .iter()
            .all(|(k, v)| inside.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        if all { value.parse().ok() } else { None }
    })
}

/// This process's open files, where the system tells (Linux's `/proc`).
fn open_files() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count)
}
