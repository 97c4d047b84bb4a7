//! Garbage appended to the last segment (a torn write) is truncated at start with a log line;
//! clients see every acknowledged record and offsets continue without a gap.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::producer::FutureRecord;

/// Collects log output so the test can check the truncation was reported.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn produce(bootstrap: &str, topic: &str, from: usize, to: usize) {
    let producer = common::producer(bootstrap, "all");
    for i in from..to {
        producer
            .send(
                FutureRecord::to(topic)
                    .key(&i.to_string())
                    .payload(&format!("message {i}")),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    }
}

fn last_segment(data: &std::path::Path, topic: &str) -> std::path::PathBuf {
    let dir = data.join("topics").join(topic).join("0");
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_is_truncated_and_clients_see_nothing_odd() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    let broker = ferry_broker::start(common::config(dir.path()))
        .await
        .unwrap();
    produce(&broker.bootstrap_servers(), "torn", 0, 50).await;
    broker.shutdown().await.unwrap();

    // A torn write: half a batch header's worth of plausible bytes, then noise.
    let segment = last_segment(dir.path(), "torn");
    let size_before = std::fs::metadata(&segment).unwrap().len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    let mut garbage = 50i64.to_be_bytes().to_vec();
    garbage.extend_from_slice(&500i32.to_be_bytes());
    garbage.extend_from_slice(&[0xAB; 77]);
    f.write_all(&garbage).unwrap();
    drop(f);

    let broker = ferry_broker::start(common::config(dir.path()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        size_before,
        "garbage truncated"
    );
    let log_text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        log_text.contains(&segment.display().to_string()) && log_text.contains("WARN"),
        "a log line names the segment:\n{log_text}"
    );

    let bootstrap = broker.bootstrap_servers();
    produce(&bootstrap, "torn", 50, 60).await;
    let got = tokio::task::spawn_blocking(move || {
        common::consume_from_beginning(&bootstrap, &[("torn", 0)], 60, Duration::from_secs(10))
    })
    .await
    .unwrap();
    assert_eq!(got.len(), 60);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.offset, i as i64, "offsets continue without a gap");
        assert_eq!(g.value.as_deref(), Some(format!("message {i}").as_bytes()));
    }
    broker.shutdown().await.unwrap();
}
