//! What the services' end-to-end tests share, so each test file holds only its scenarios.
//!
//! - [`Harness`]: the real built-in broker on `127.0.0.1:0` with a temp data directory, a
//!   [`ServiceConfig`] pointing at it (port 0, SQLite files in the same temp directory), and a
//!   shutdown token cancelled on drop;
//! - [`Http`]: JSON requests answering `(status, body)`, and [`Http::until`], which polls a
//!   path until a condition holds or fails the test at a deadline (no sleeping "long enough");
//! - [`produce_raw`] and [`consume_raw`]: bytes straight onto a topic (poison messages,
//!   redeliveries) and off it (dead-letter checks), through a real `rdkafka` client;
//!   [`consume_until`] collects a topic's messages until a condition over all of them holds;
//!   [`create_topic`] makes a topic with several partitions; [`produce_plain`] sends a record
//!   with no key and no headers as a plain producer does, and [`rewind_group`] moves a stopped
//!   group's offset back, for a real redelivery;
//! - [`postgres_url`]: the PostgreSQL server of `FERRY_TEST_POSTGRES_URL`, or a printed skip.

use std::time::{Duration, Instant};

use ferry_service::ServiceConfig;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use reqwest;

/// How long [`Http::until`] and [`consume_raw`] wait before failing the test.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A broker in a temp directory and a service configuration pointing at it.
#[derive(Debug)]
pub struct Harness {
    /// Stops every service started with [`Harness::shutdown`]; cancelled on drop.
    pub shutdown: CancellationToken,
    broker: ferry_broker::BrokerHandle,
    dir: tempfile::TempDir,
}

impl Harness {
    /// Starts the broker.
    pub async fn start() -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn")
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = ferry_broker::start(ferry_broker::BrokerConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.path().join("broker"),
            ..Default::default()
        })
        .await
        .expect("broker starts");
        Harness {
            shutdown: CancellationToken::new(),
            broker,
            dir,
        }
    }

    /// The broker's bootstrap servers.
    pub fn bootstrap(&self) -> String {
        self.broker.bootstrap_servers()
    }

    /// The temp directory (SQLite files live here).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A config for a service: this broker, SQLite files in the temp directory, port 0.
    pub fn config(&self) -> ServiceConfig {
        ServiceConfig::new(self.bootstrap(), self.dir.path(), 0)
    }

    /// The shutdown token services should be started with.
    pub fn token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// JSON over HTTP against one base URL.
#[derive(Debug, Clone)]
pub struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    /// A client for `http://{addr}`.
    pub fn new(addr: std::net::SocketAddr) -> Http {
        Http {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `body` (if any) as JSON; answers the status and the body as JSON (`Null` if the
    /// body is empty or not JSON).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status();
        let text = response.text().await.expect("HTTP body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    /// Polls `GET path` until `cond` holds for the answer, then returns the body; fails the
    /// test after [`DEADLINE`] with the last answer.
    #[track_caller]
    pub fn until<'a>(
        &'a self,
        path: &'a str,
        cond: impl Fn(StatusCode, &Value) -> bool + 'a,
    ) -> impl Future<Output = Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = Instant::now() + DEADLINE;
            loop {
                let (status, body) = self.get(path).await;
                if cond(status, &body) {
                    return body;
                }
                assert!(
                    Instant::now() < deadline,
                    "{caller}: GET {path} never satisfied the condition; last: {status} {body}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Produces `payload` to `topic` with `key` and `headers`, bypassing the toolkit (for poison
/// messages and hand-made redeliveries); waits for the broker's acknowledgement.
pub async fn produce_raw(
    bootstrap: &str,
    topic: &str,
    key: &str,
    headers: &[(&str, &str)],
    payload: &[u8],
) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    let mut owned = OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(owned),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
}

/// Produces `payload` to partition 0 of `topic` with no key and no headers, the way a plain
/// producer in any language does; returns its offset.
pub async fn produce_plain(bootstrap: &str, topic: &str, payload: &[u8]) -> i64 {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    let record: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(topic).partition(0).payload(payload);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("produce")
        .offset
}

/// Moves `group`'s committed offset of `topic` partition 0 back to `offset`, so the group's
/// next member reads from there again: a redelivery. The group must have no members.
pub fn rewind_group(bootstrap: &str, group: &str, topic: &str, offset: i64) {
    use rdkafka::consumer::{BaseConsumer, CommitMode};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets
        .add_partition_offset(topic, 0, rdkafka::Offset::Offset(offset))
        .expect("offset");
    consumer
        .commit(&offsets, CommitMode::Sync)
        .expect("commit the rewound offset");
}

/// A consumer group name no other reader in this process uses, so readers never share partitions.
fn unique_group() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("testkit-{}-{n}", std::process::id())
}

/// A message read by [`consume_raw`].
#[derive(Debug, Clone)]
pub struct RawMessage {
    /// The key, as text.
    pub key: String,
    /// The payload, as text.
    pub payload: String,
    /// Every header, as text.
    pub headers: Vec<(String, String)>,
}

impl RawMessage {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads `topic` from the beginning until `found` holds for a message, and returns it; fails
/// the test after [`DEADLINE`].
pub async fn consume_raw(
    bootstrap: &str,
    topic: &str,
    found: impl Fn(&RawMessage) -> bool,
) -> RawMessage {
    let consumer = reader(bootstrap, topic);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let raw = next_raw(&consumer, deadline)
            .await
            .unwrap_or_else(|| panic!("no matching message on {topic} in {DEADLINE:?}"));
        if found(&raw) {
            return raw;
        }
    }
}

/// Reads `topic` from the beginning, collecting every message, until `done` holds for all read
/// so far (in the order read: partition by partition, each in offset order), and returns them;
/// fails the test after [`DEADLINE`] saying how many were read.
pub async fn consume_until(
    bootstrap: &str,
    topic: &str,
    done: impl Fn(&[RawMessage]) -> bool,
) -> Vec<RawMessage> {
    let consumer = reader(bootstrap, topic);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut read = Vec::new();
    while !done(&read) {
        match next_raw(&consumer, deadline).await {
            Some(message) => read.push(message),
            None => panic!(
                "{topic}: the condition did not hold for the {} messages read in {DEADLINE:?}",
                read.len()
            ),
        }
    }
    read
}

/// Creates `topic` with `partitions` partitions (before any client auto-creates it with the
/// broker's default of one), so a test can spread messages over several partitions.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("CreateTopics");
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("cannot create topic {name}: {code}"));
    }
}

/// The PostgreSQL server tests may use, from `FERRY_TEST_POSTGRES_URL`; `None` (after printing
/// `skipped: FERRY_TEST_POSTGRES_URL not set`) when it is not set, so the caller can return.
pub fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("skipped: {POSTGRES_ENV} not set");
            None
        }
    }
}

/// The variable naming the PostgreSQL server for tests.
pub const POSTGRES_ENV: &str = "FERRY_TEST_POSTGRES_URL";

/// A consumer of `topic` from its beginning, in a group of its own.
fn reader(bootstrap: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_group())
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// The next message `consumer` reads, or `None` once `deadline` passed. Errors are passed
/// over: the usual one is that the topic does not exist *yet* (the service under test has not
/// published its first message), which the next metadata refresh cures.
async fn next_raw(consumer: &StreamConsumer, deadline: tokio::time::Instant) -> Option<RawMessage> {
    let message = loop {
        match tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .ok()?
        {
            Ok(message) => break message,
            Err(e) => {
                eprintln!("consume: {e}; still waiting");
                tokio::time::sleep_until(
                    deadline.min(tokio::time::Instant::now() + Duration::from_millis(100)),
                )
                .await;
            }
        }
    };
    let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
    Some(RawMessage {
        key: text(message.key()),
        payload: text(message.payload()),
        headers: message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), text(h.value)))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// A PostgreSQL database per test run. Services name their schema after themselves, so runs
/// of one service's tests are kept apart one level up: each run gets a database of its own.
pub mod pg {
    use sqlx::{Connection, Executor, PgConnection};
    use uuid::Uuid;

    /// A database created for one test and dropped (with any connections left) on drop.
    #[derive(Debug)]
    pub struct FreshDatabase {
        admin_url: String,
        name: String,
        /// Its URL.
        pub url: String,
    }

    impl FreshDatabase {
        /// Creates `ferry_test_<prefix>_<uuid>` on the server of `admin_url`.
        pub async fn create(admin_url: &str, prefix: &str) -> FreshDatabase {
            let name = format!("ferry_test_{prefix}_{}", Uuid::now_v7().simple());
            let mut conn = PgConnection::connect(admin_url)
                .await
                .expect("FERRY_TEST_POSTGRES_URL accepts connections");
            conn.execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("CREATE DATABASE");
            conn.close().await.ok();
            let mut url = reqwest::Url::parse(admin_url).expect("a URL");
            url.set_path(&format!("/{name}"));
            FreshDatabase {
                admin_url: admin_url.to_owned(),
                name,
                url: url.to_string(),
            }
        }

        /// The answer to `sql`, a `count(*)` query.
        pub async fn count(&self, sql: &str) -> i64 {
            let mut conn = PgConnection::connect(&self.url).await.expect("connects");
            let count: i64 = sqlx::query_scalar(sql)
                .fetch_one(&mut conn)
                .await
                .expect("counted");
            conn.close().await.ok();
            count
        }
    }

    impl Drop for FreshDatabase {
        fn drop(&mut self) {
            let (url, name) = (self.admin_url.clone(), self.name.clone());
            // Drop runs inside the test's runtime, which cannot be blocked on: use a thread
            // with a runtime of its own.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let mut conn = PgConnection::connect(&url).await?;
                    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await?;
                    conn.close().await
                })
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("could not drop test database {}: {dropped:?}", self.name);
            }
        }
    }
}
