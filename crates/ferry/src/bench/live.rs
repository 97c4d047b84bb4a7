//! `ferry bench dashboard`: the rate of events the dashboard's live view keeps up with.
//!
//! Starts a broker and the dashboard in this process, opens the live event stream as a page
//! would (server-sent events over HTTP), and publishes envelope-carrying messages at a series
//! of rising rates, a few seconds each. For every rate it reports how many events reached the
//! stream, how many the stream skipped because the reader fell behind, and the delay from
//! production to arrival on the stream. A rate is kept up with when every event arrived, none
//! was skipped, and the p99 delay stayed under a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use ferry_service::ServiceConfig;
use ferry_toolkit::kafka::KafkaConfig;
use ferry_toolkit::{Message, Publisher};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::kafka::thousands;

#[derive(Debug, Args)]
pub struct LiveBenchArgs {
    /// Rates to try, in events per second.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,1000,2000,5000,10000,20000"
    )]
    rates: Vec<u64>,
    /// Seconds at each rate.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Tick {
    n: u64,
    rate: u64,
}

impl Message for Tick {
    const TYPE: &'static str = "BenchTick";
    fn key(&self) -> String {
        (self.n % 64).to_string()
    }
}

/// What the stream reader has seen for the current rate.
#[derive(Default)]
struct Seen {
    rate: u64,
    events: u64,
    delay_ms: Option<Histogram<u64>>,
}

pub async fn bench(args: LiveBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = super::start_embedded_broker(dir.path()).await?;
    let shutdown = CancellationToken::new();
    let config = ServiceConfig::new(broker.bootstrap_servers(), dir.path(), 0);
    let dashboard = dashboard::start(config, Vec::new(), shutdown.clone()).await?;
    println!(
        "ferry bench dashboard: rates {:?} events/s, {} s each; broker and dashboard in this process",
        args.rates, args.seconds
    );

    let seen = Arc::new(Mutex::new(Seen::default()));
    let missed = Arc::new(AtomicU64::new(0));
    let mut stream = reqwest::Client::new()
        .get(format!("http://{}/api/ferry/events/stream", dashboard.addr))
        .send()
        .await
        .context("cannot open the live stream")?;
    let reader = {
        let (seen, missed) = (seen.clone(), missed.clone());
        tokio::spawn(async move {
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = stream.chunk().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    read_frame(&frame, &seen, &missed);
                }
            }
        })
    };

    let publisher = Publisher::kafka(&KafkaConfig::new(broker.bootstrap_servers()))?;
    let topic = "bench-live";
    // Warm up: the tap joins its group and picks the topic up.
    publisher
        .publish(topic, Tick { n: 0, rate: 0 })
        .await
        .map_err(|e| anyhow::anyhow!("cannot publish: {}", e.error()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().events == 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the stream never showed the first event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!(
        "{:>9} {:>9} {:>9} {:>8} {:>10} {:>10}  kept up",
        "rate/s", "sent", "streamed", "skipped", "p50 ms", "p99 ms"
    );
    let mut best = 0;
    let mut n = 1;
    for &rate in &args.rates {
        *seen.lock() = Seen {
            rate,
            events: 0,
            delay_ms: Some(Histogram::new(3)?),
        };
        missed.store(0, Ordering::Relaxed);
        let total = rate * args.seconds;
        let started = Instant::now();
        let mut sends = tokio::task::JoinSet::new();
        for i in 0..total {
            // Paced: message i leaves at i / rate seconds.
            let at = started + Duration::from_secs_f64(i as f64 / rate as f64);
            if at > Instant::now() {
                tokio::time::sleep_until(at.into()).await;
            }
            let publisher = publisher.clone();
            let tick = Tick { n, rate };
            n += 1;
            sends.spawn(async move { publisher.publish(topic, tick).await.is_ok() });
        }
        let mut sent = 0;
        while let Some(ok) = sends.join_next().await {
            sent += u64::from(ok.unwrap_or(false));
        }
        // Give the stream a second to deliver what was sent last.
        let grace = Instant::now() + Duration::from_secs(5);
        while seen.lock().events < sent && Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = seen.lock();
        let h = s.delay_ms.as_ref().context("histogram")?;
        let skipped = missed.load(Ordering::Relaxed);
        let kept_up = s.events >= sent && skipped == 0 && h.value_at_quantile(0.99) < 1000;
        if kept_up {
            best = best.max(rate);
        }
        println!(
            "{:>9} {:>9} {:>9} {:>8} {:>10} {:>10}  {}",
            thousands(rate),
            thousands(sent),
            thousands(s.events),
            skipped,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            if kept_up { "yes" } else { "no" }
        );
    }
    println!(
        "the live view kept up with {} events/s (highest rate tried without falling behind)",
        thousands(best)
    );
    shutdown.cancel();
    reader.abort();
    let _ = dashboard.task.await;
    broker.shutdown().await?;
    Ok(())
}

/// Counts one server-sent-events frame: an `events` batch or a `missed` notice.
fn read_frame(frame: &str, seen: &Mutex<Seen>, missed: &AtomicU64) {
    let data: String = frame
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    if frame.contains("event: missed") {
        missed.fetch_add(data.parse().unwrap_or(1), Ordering::Relaxed);
        return;
    }
    if !frame.contains("event: events") {
        return;
    }
    let Ok(batch) = serde_json::from_str::<Vec<serde_json::Value>>(&data) else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut s = seen.lock();
    let rate = s.rate;
    for e in batch {
        if e["type"] != Tick::TYPE {
            continue;
        }
        if s.delay_ms.is_some() && e["payload"]["rate"] != rate {
            continue;
        }
        s.events += 1;
        if let (Some(h), Some(at)) = (s.delay_ms.as_mut(), e["producedAt"].as_u64()) {
            let _ = h.record(now.saturating_sub(at));
        }
    }
}
