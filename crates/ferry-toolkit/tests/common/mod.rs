//! Shared test helpers: the real broker on 127.0.0.1 with a temp data directory, on its own
//! thread and runtime, plus real librdkafka clients.
//!
//! The broker gets its own runtime so tests may pause *their* clock: a paused clock that the
//! broker shared would fire its session timeouts and fetch waits at will.
#![allow(dead_code)]

pub mod amqp;
pub mod stores;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_broker::BrokerConfig;
use ferry_toolkit::kafka::KafkaConfig;
use ferry_toolkit::{
    HandlerError, IncomingMessage, Message, MessageContext, RetryPolicy, handler_fn,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,librdkafka=warn,ferry_broker=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A broker running on its own thread and tokio runtime.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestBroker {
    /// A broker on a free port with a fresh data directory.
    pub fn start() -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        let mut broker = TestBroker::start_at("127.0.0.1:0".parse().unwrap(), data);
        broker._dir = Some(dir);
        broker
    }

    /// A broker on `addr` with data in `data`.
    pub fn start_at(addr: SocketAddr, data: PathBuf) -> TestBroker {
        init_tracing();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let config = BrokerConfig {
            listen: addr,
            data_dir: data.clone(),
            // The consumer protocol's timeouts are the broker's: as short as the classic ones
            // `kafka()` sets on the clients.
            consumer_session_timeout: Duration::from_secs(6),
            consumer_heartbeat_interval: Duration::from_millis(500),
            ..BrokerConfig::default()
        };
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let handle = ferry_broker::start(config).await.expect("broker starts");
                addr_tx.send(handle.local_addr()).unwrap();
                let _ = stop_rx.await;
                handle.shutdown().await.expect("broker stops");
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("broker started");
        TestBroker {
            addr,
            data,
            _dir: None,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the broker (flushing its data) and waits for it.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }

    /// Stops the broker and starts a new one on the same address and data directory.
    pub fn restart(&mut self) {
        self.stop();
        let mut next = TestBroker::start_at(self.addr, self.data.clone());
        self.stop = next.stop.take();
        self.thread = next.thread.take();
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Client settings for tests: short sessions, quick fetches and quick start-up retries.
pub fn kafka(bootstrap: &str) -> KafkaConfig {
    let mut config = KafkaConfig::new(bootstrap)
        .set_consumer("session.timeout.ms", "6000")
        .set_consumer("heartbeat.interval.ms", "500")
        .set_consumer("fetch.wait.max.ms", "100")
        .set_consumer("statistics.interval.ms", "1000")
        .set_producer("message.timeout.ms", "20000");
    config.connect_backoff = RetryPolicy {
        initial: Duration::from_millis(100),
        multiplier: 2.0,
        max_delay: Duration::from_millis(500),
        max_attempts: u32::MAX,
        jitter: 0.0,
        attempt_timeout: Some(Duration::from_secs(1)),
    };
    config.probe_interval = Duration::from_millis(500);
    config
}

/// A unique name, so tests sharing the process-wide metrics recorder do not mix.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::now_v7().simple().to_string()[20..])
}

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

/// Every record of `topic` (all partitions), read from the beginning until `count` arrived.
pub async fn read_topic(
    bootstrap: &str,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<IncomingMessage> {
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .set("allow.auto.create.topics", "true")
            .set("fetch.wait.max.ms", "100")
            .create()
            .unwrap();
        let deadline = Instant::now() + timeout;
        let partitions = loop {
            let md = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .unwrap();
            let n = md.topics().first().map_or(0, |t| t.partitions().len());
            if n > 0 || Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        while out.len() < count && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                out.push(IncomingMessage {
                    topic: m.topic().to_owned(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                });
            }
        }
        out
    })
    .await
    .unwrap()
}

/// Produces one raw record (for records the typed publisher would never write).
pub async fn produce_raw(
    bootstrap: &str,
    topic: &str,
    partition: Option<i32>,
    key: &str,
    headers: &[(&str, &str)],
    payload: &[u8],
) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    let mut record = FutureRecord::to(topic).key(key).payload(payload).headers(h);
    if let Some(p) = partition {
        record = record.partition(p);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("produced");
}

/// Waits in real time, off the runtime, until `cond` holds. In a test with a paused clock this
/// also keeps the clock still meanwhile (a blocking task inhibits auto-advance), so timers in
/// the test's runtime fire only when the test advances time.
pub async fn wait_until(timeout: Duration, cond: impl Fn() -> bool + Send + 'static) -> bool {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    })
    .await
    .unwrap()
}

/// With a paused clock: advances virtual time by `step` at a time, letting real I/O progress
/// between steps, until `cond` holds or `timeout` of real time passed.
pub async fn drive_until(
    step: Duration,
    timeout: Duration,
    cond: impl Fn() -> bool + Send + Sync + 'static,
) -> bool {
    let cond = Arc::new(cond);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::advance(step).await;
        let c = cond.clone();
        wait_until(Duration::from_millis(20), move || c()).await;
    }
    cond()
}

/// The value of a counter or gauge in the Prometheus rendering, summed over series whose
/// labels include all of `labels`.
pub fn metric(name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = ferry_toolkit::ops::metrics::render();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, "}"));
            if series_name != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The test message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greeting {
    pub id: String,
    pub text: String,
}

impl Message for Greeting {
    const TYPE: &'static str = "test.greeting";
    /// The entity is the part of the id before a `:`, so "e1:a" and "e1:b" share a partition.
    fn key(&self) -> String {
        self.id.split(':').next().unwrap_or_default().to_owned()
    }
}

pub fn greeting(id: &str) -> Greeting {
    Greeting {
        id: id.to_owned(),
        text: format!("hello {id}"),
    }
}

/// One handler call as a test saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub message_id: Uuid,
    pub partition: i32,
    pub offset: i64,
    pub attempt: u32,
    pub at: tokio::time::Instant,
}

/// A shared log of handler calls.
#[derive(Debug, Clone, Default)]
pub struct Calls(pub Arc<Mutex<Vec<Call>>>);

impl Calls {
    pub fn record(&self, greeting: &Greeting, ctx: &MessageContext) {
        self.0.lock().unwrap().push(Call {
            id: greeting.id.clone(),
            message_id: ctx.message_id(),
            partition: ctx.partition(),
            offset: ctx.offset(),
            attempt: ctx.attempt(),
            at: tokio::time::Instant::now(),
        });
    }

    pub fn all(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }

    pub fn ids(&self) -> Vec<String> {
        self.all().into_iter().map(|c| c.id).collect()
    }

    pub fn count(&self, id: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|c| c.id == id).count()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A handler that records every call and succeeds.
pub fn recording(calls: &Calls) -> impl ferry_toolkit::Handler<Greeting> {
    let calls = calls.clone();
    handler_fn(move |g: Greeting, ctx: MessageContext| {
        calls.record(&g, &ctx);
        async { Ok::<_, HandlerError>(()) }
    })
}
