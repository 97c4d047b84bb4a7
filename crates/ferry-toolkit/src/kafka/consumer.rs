//! Running a [`Router`] as a Kafka consumer-group member.
//!
//! Threads and tasks:
//! - A start-up task waits for the broker (exponential backoff, a log line per attempt, the
//!   reason shown by `/ready`), subscribes, and starts the poll thread.
//! - The poll thread (`ferry-poll-<group>`) is a plain OS thread that polls librdkafka's main
//!   queue: rebalances, commit results, errors, statistics (consumer lag). Rebalance callbacks
//!   run on it and block it while revoked partitions finish their message in hand and commit,
//!   which is why it is not a tokio task. It also probes the broker for `/ready`.
//! - One tokio task per assigned partition (`partition.rs`). Its queue is split off
//!   librdkafka's main queue in the assign callback, *before* the assignment takes effect, so
//!   no message of that partition ever reaches the main queue.
//!
//! Offsets: `enable.auto.commit=false`; a worker commits a message's offset only after the
//! message was handled, skipped or dead-lettered (its dead letter acknowledged). On revoke and on shutdown the last offsets
//! are committed synchronously before the partitions are let go.
//!
//! Exactly-once mode ([`Router::exactly_once`], `eos.rs`): the start-up task also registers the
//! router's transactional producer (`init_transactions`, which fences an older instance with the
//! same id) before subscribing; workers commit each batch in a transaction instead of with
//! `commit`, so nothing is committed on revoke or shutdown beyond what their transactions did.
//! The consumer reads with `isolation.level=read_committed`. A fatal producer error (fenced)
//! stops the router and is reported by [`RouterHandle::failure`].
//!
//! Graceful shutdown ([`RouterHandle::shutdown`]): workers stop taking messages, finish the one
//! in hand (a message in retry backoff is left uncommitted, to be delivered again), the final
//! offsets are committed, and the consumer closes, leaving the group.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message as _;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::eos::Transactions;
use super::{
    KafkaConfig, log_client_error, log_librdkafka, partition, probe_blocking, wait_until_reachable,
};
use crate::error::{Error, Result};
use crate::ops::{Check, metrics};
use crate::process::Processor;
use crate::publisher::Publisher;
use crate::router::Router;

type TopicPartition = (String, i32);

/// A running router. Dropping it starts a graceful shutdown in the background; prefer
/// [`RouterHandle::shutdown`], which waits for it.
#[derive(Debug)]
pub struct RouterHandle {
    shared: Arc<Shared>,
    done: Option<oneshot::Receiver<()>>,
}

/// Starts `router` against Kafka and returns at once: the router connects in the background.
/// Dead letters and handler follow-ups go through `publisher`; in exactly-once mode
/// ([`Router::exactly_once`]) they go through the router's own transactional producer instead
/// (made from `config`), and `publisher` is not used.
///
/// Must be called within a tokio runtime.
pub fn start_router(
    router: Router,
    config: &KafkaConfig,
    publisher: Publisher,
) -> Result<RouterHandle> {
    if router.topics.is_empty() {
        return Err(Error::Config(format!(
            "router {:?} subscribes to no topic",
            router.group
        )));
    }
    router.retry.validate().map_err(Error::Config)?;
    let transactions = match &router.transactional_id {
        Some(id) if id.is_empty() => {
            return Err(Error::Config(format!(
                "router {:?}: the transactional id is empty",
                router.group
            )));
        }
        Some(id) => Some(Arc::new(Transactions::new(config, id)?)),
        None => None,
    };
    if router.handlers.is_empty() {
        tracing::warn!(group = %router.group, "router has no handlers: every message will be skipped");
    }
    let broker = router
        .health
        .register(format!("kafka:{}:broker", router.group), "connecting");
    let group = router
        .health
        .register(format!("kafka:{}:group", router.group), "not joined yet");
    let shared = Arc::new(Shared {
        group: router.group.clone(),
        topics: router.topics.clone(),
        processor: Processor::new(
            &router,
            publisher,
            super::FEATURES.each_group_gets_every_message,
        ),
        runtime: Handle::current(),
        stop: CancellationToken::new(),
        aborting: AtomicBool::new(false),
        workers: Mutex::new(HashMap::new()),
        done: Mutex::new(HashMap::new()),
        consumer: OnceLock::new(),
        broker,
        group_check: group,
        transactions,
        failure: OnceLock::new(),
    });
    let mut client_config = config.consumer_config(&router.group);
    if shared.transactions.is_some() {
        // Inputs written by an aborted transaction (an upstream exactly-once service that
        // crashed) must not be handled.
        client_config.set("isolation.level", "read_committed");
    }
    if !config.client.contains_key("statistics.interval.ms")
        && !config.consumer.contains_key("statistics.interval.ms")
    {
        // Statistics carry each partition's lag, for the ferry_consumer_lag_messages gauge.
        client_config.set("statistics.interval.ms", "5000");
    }
    let consumer: Arc<BaseConsumer<RouterContext>> =
        Arc::new(client_config.create_with_context(RouterContext {
            shared: shared.clone(),
        })?);
    let _ = shared.consumer.set(Arc::downgrade(&consumer));

    let (done_tx, done_rx) = oneshot::channel();
    let config = config.clone();
    let task_shared = shared.clone();
    shared.runtime.spawn(async move {
        let shared = task_shared;
        if wait_until_reachable(consumer.clone(), &config, Some(&shared.broker), &shared.stop).await.is_err() {
            let _ = done_tx.send(());
            return;
        }
        shared.broker.ready();
        if let Some(transactions) = &shared.transactions
            && let Err(e) = init_transactions(transactions, &config, &shared).await
        {
            shared.fail(&format!("cannot register the transactional producer: {e}"));
            let _ = done_tx.send(());
            return;
        }
        let (c, topics) = (consumer.clone(), shared.topics.clone());
        let _ = tokio::task::spawn_blocking(move || ensure_topics(&c, &topics)).await;
        let topics: Vec<&str> = shared.topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&topics) {
            tracing::error!(group = %shared.group, error = %e, "cannot subscribe");
            shared.group_check.not_ready(format!("cannot subscribe: {e}"));
            let _ = done_tx.send(());
            return;
        }
        tracing::info!(group = %shared.group, topics = ?shared.topics, "subscribed; joining the group");
        let name = format!("ferry-poll-{}", shared.group);
        let thread_shared = shared.clone();
        let probe_interval = config.probe_interval;
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || poll_loop(consumer, thread_shared, probe_interval, done_tx));
        if let Err(e) = spawned {
            tracing::error!(group = %shared.group, error = %e, "cannot start the poll thread");
        }
    });
    Ok(RouterHandle {
        shared,
        done: Some(done_rx),
    })
}

impl RouterHandle {
    /// Stops gracefully: finishes in-flight messages, commits, leaves the group.
    pub async fn shutdown(mut self) {
        self.shared.stop.cancel();
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }

    /// Stops at once, as if the process had died: in-flight handlers are dropped mid-way and
    /// nothing more is committed, so those messages are delivered again.
    pub async fn abort(mut self) {
        self.shared.aborting.store(true, Ordering::SeqCst);
        self.shared.stop.cancel();
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }

    /// Why the router stopped by itself, if it did: in exactly-once mode, a fatal producer error
    /// (another instance with the same transactional id fenced this one) or a transactional
    /// producer that could not be registered.
    pub fn failure(&self) -> Option<&str> {
        self.shared.failure.get().map(String::as_str)
    }

    /// Whether the broker is reachable and the group joined.
    pub fn is_ready(&self) -> bool {
        self.shared.broker.is_ready() && self.shared.group_check.is_ready()
    }

    /// The partitions this member currently works on, sorted.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        let mut parts: Vec<_> = self.shared.workers.lock().keys().cloned().collect();
        parts.sort();
        parts
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.shared.group
    }
}

impl Drop for RouterHandle {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// State shared by the start-up task, the poll thread, the rebalance callbacks and the workers.
pub(super) struct Shared {
    group: String,
    topics: Vec<String>,
    pub(super) processor: Processor,
    runtime: Handle,
    stop: CancellationToken,
    aborting: AtomicBool,
    workers: Mutex<HashMap<TopicPartition, Worker>>,
    /// The next offset to handle per partition, as far as this process knows; survives
    /// rebalances so a partition that comes back is not handled twice.
    done: Mutex<HashMap<TopicPartition, i64>>,
    consumer: OnceLock<Weak<BaseConsumer<RouterContext>>>,
    broker: Check,
    group_check: Check,
    /// The transactional producer, in exactly-once mode.
    pub(super) transactions: Option<Arc<Transactions>>,
    /// Set once when the router stops by itself.
    failure: OnceLock<String>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("group", &self.group)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

struct Worker {
    stop: CancellationToken,
    task: JoinHandle<Option<i64>>,
}

impl Shared {
    /// Stops the router because it cannot go on; the first reason is kept.
    pub(super) fn fail(&self, reason: &str) {
        if self.failure.set(reason.to_owned()).is_ok() {
            tracing::error!(group = %self.group, reason, "router stopping: cannot go on");
        }
        self.group_check.not_ready(reason.to_owned());
        self.stop.cancel();
    }

    pub(super) fn done_offset(&self, key: &TopicPartition) -> Option<i64> {
        self.done.lock().get(key).copied()
    }

    pub(super) fn set_done_offset(&self, key: TopicPartition, next: i64) {
        let mut done = self.done.lock();
        let entry = done.entry(key).or_insert(next);
        *entry = (*entry).max(next);
    }

    /// Assign callback: split each partition's queue and start its worker.
    fn assign(self: &Arc<Self>, tpl: &TopicPartitionList) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        let mut workers = self.workers.lock();
        for element in tpl.elements() {
            let key = (element.topic().to_owned(), element.partition());
            if workers.contains_key(&key) {
                continue;
            }
            let Some(queue) = consumer.split_partition_queue(element.topic(), element.partition())
            else {
                tracing::error!(topic = %key.0, partition = key.1, "cannot split the partition queue");
                continue;
            };
            let stop = self.stop.child_token();
            let task = self.runtime.spawn(partition::run(
                self.clone(),
                consumer.clone(),
                queue,
                key.0.clone(),
                key.1,
                stop.clone(),
            ));
            workers.insert(key, Worker { stop, task });
        }
        let mut parts: Vec<_> = workers.keys().cloned().collect();
        parts.sort();
        drop(workers);
        tracing::info!(group = %self.group, partitions = ?parts, "partitions assigned");
        self.group_check.ready();
    }

    /// Revoke callback, and shutdown: stop the workers of `keys` and commit where they got to.
    fn stop_workers(
        &self,
        consumer: &BaseConsumer<RouterContext>,
        keys: Option<&TopicPartitionList>,
    ) {
        let stopping: Vec<(TopicPartition, Worker)> = {
            let mut workers = self.workers.lock();
            match keys {
                Some(tpl) => tpl
                    .elements()
                    .iter()
                    .filter_map(|e| {
                        let key = (e.topic().to_owned(), e.partition());
                        workers.remove(&key).map(|w| (key, w))
                    })
                    .collect(),
                None => workers.drain().collect(),
            }
        };
        if stopping.is_empty() {
            return;
        }
        let aborting = self.aborting.load(Ordering::SeqCst);
        for (_, worker) in &stopping {
            worker.stop.cancel();
            if aborting {
                worker.task.abort();
            }
        }
        let (keys, tasks): (Vec<_>, Vec<_>) =
            stopping.into_iter().map(|(key, w)| (key, w.task)).unzip();
        // This is the poll thread (never a runtime thread), so blocking on the workers is fine.
        let results = self.runtime.block_on(futures::future::join_all(tasks));
        if aborting {
            tracing::warn!(group = %self.group, partitions = ?keys, "aborted without committing");
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (key, result) in keys.iter().zip(results) {
            match result {
                Ok(Some(next)) => {
                    let _ = tpl.add_partition_offset(&key.0, key.1, Offset::Offset(next));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(topic = %key.0, partition = key.1, error = %e, "partition worker failed")
                }
            }
        }
        if tpl.count() > 0 {
            match consumer.commit(&tpl, CommitMode::Sync) {
                Ok(()) => {
                    tracing::info!(group = %self.group, partitions = ?keys, "final offsets committed")
                }
                Err(e) => tracing::warn!(
                    group = %self.group,
                    error = %e,
                    "final commit failed; messages after the group's last committed offset may be delivered again"
                ),
            }
        }
    }
}

/// Registers the transactional producer, retrying with the connect backoff while the
/// coordinator is not available; a fatal error (fenced while registering) is not retried.
async fn init_transactions(
    transactions: &Transactions,
    config: &KafkaConfig,
    shared: &Shared,
) -> Result<()> {
    let mut attempt = 1;
    loop {
        match transactions.init().await {
            Ok(()) => {
                tracing::info!(group = %shared.group, transactional_id = transactions.transactional_id(), "transactional producer registered");
                return Ok(());
            }
            Err(Error::Kafka(KafkaError::Transaction(e)))
                if !e.is_fatal() && config.connect_backoff.retries_after(attempt) =>
            {
                let delay = config.connect_backoff.delay(attempt, &mut rand::rng());
                tracing::warn!(group = %shared.group, error = %e, retry_in = ?delay, "cannot register the transactional producer yet");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shared.stop.cancelled() => return Err(Error::Stopped),
                }
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Asks for each topic's metadata, which makes a broker that auto-creates topics create it:
/// librdkafka joins the group only once a subscribed topic exists, and a service should not
/// stay unready until some producer happens to write first.
fn ensure_topics(consumer: &BaseConsumer<RouterContext>, topics: &[String]) {
    for topic in topics {
        let found = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map(|m| {
                m.topics()
                    .iter()
                    .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            });
        match found {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                topic,
                "topic does not exist (yet); the group is joined once it does"
            ),
            Err(e) => tracing::warn!(topic, error = %e, "cannot read topic metadata"),
        }
    }
}

/// The poll thread's body.
fn poll_loop(
    consumer: Arc<BaseConsumer<RouterContext>>,
    shared: Arc<Shared>,
    probe_interval: Duration,
    done: oneshot::Sender<()>,
) {
    let mut last_probe = Instant::now();
    let mut last_error: Option<String> = None;
    while !shared.stop.is_cancelled() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                // Cannot happen: every partition's queue is split before it is assigned. Leave
                // the message uncommitted rather than handle it out of order.
                tracing::error!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    "message on the main queue; left uncommitted"
                );
            }
            Some(Err(e)) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(group = %shared.group, error = %e, "consumer error");
                    last_error = Some(text);
                }
                if matches!(&e, KafkaError::MessageConsumption(code) if *code == rdkafka::types::RDKafkaErrorCode::AllBrokersDown)
                {
                    shared.broker.not_ready(format!("all brokers down: {e}"));
                }
            }
        }
        if last_probe.elapsed() >= probe_interval {
            last_probe = Instant::now();
            match probe_blocking(&consumer, Duration::from_secs(2)) {
                Ok(()) => {
                    if !shared.broker.is_ready() {
                        tracing::info!(group = %shared.group, "broker reachable again");
                    }
                    shared.broker.ready();
                    last_error = None;
                }
                Err(e) => shared
                    .broker
                    .not_ready(format!("broker not reachable: {e}")),
            }
        }
    }
    tracing::info!(group = %shared.group, "stopping: finishing in-flight messages");
    shared.stop_workers(&consumer, None);
    shared.group_check.not_ready("stopped");
    shared.broker.not_ready("stopped");
    // Dropping the last reference closes the consumer, which leaves the group.
    drop(consumer);
    tracing::info!(group = %shared.group, "router stopped");
    let _ = done.send(());
}

/// The librdkafka context of a router's consumer: rebalance callbacks, logs, statistics.
pub(crate) struct RouterContext {
    shared: Arc<Shared>,
}

impl ClientContext for RouterContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_librdkafka(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        let workers = self.shared.workers.lock();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if !workers.contains_key(&(topic.clone(), *partition)) {
                    continue;
                }
                // consumer_lag counts from the committed offset; before the first commit of
                // a new group it is unknown (-1), so count from the fetch position instead.
                let lag = if p.consumer_lag >= 0 {
                    p.consumer_lag
                } else if p.hi_offset >= 0 && p.app_offset >= 0 {
                    p.hi_offset - p.app_offset
                } else {
                    continue;
                };
                metrics::lag(self.shared.processor.by(), topic, *partition, lag);
            }
        }
    }
}

impl ConsumerContext for RouterContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                if !self.shared.stop.is_cancelled() {
                    self.shared.assign(tpl);
                }
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(group = %self.shared.group, lost = consumer.assignment_lost(), "partitions revoked");
                self.shared.group_check.not_ready("rebalancing");
                self.shared.stop_workers(consumer, Some(tpl));
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.shared.group, error = %e, "rebalance error")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::debug!(group = %self.shared.group, error = %e, offsets = ?offsets.to_topic_map(), "commit failed");
        }
    }
}
