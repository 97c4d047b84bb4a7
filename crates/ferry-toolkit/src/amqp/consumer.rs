//! Running a [`Router`] on RabbitMQ.
//!
//! Tasks:
//! - A supervisor task owns the connection: it connects with exponential backoff (a log line
//!   per attempt, the reason shown by `/ready`), runs a session, and when the session ends
//!   because the connection or a channel was lost (a broker restart), reconnects the same way.
//! - A session declares each subscribed queue and its `<queue>.dlq` (durable), and starts one
//!   worker task per queue on a channel of its own with `basic.qos(prefetch)`, so a queue
//!   whose message is in retry backoff holds back only itself.
//! - A worker takes its queue's deliveries one at a time, in order, runs them through the
//!   shared processing logic (`crate::process`: dispatch, retries, dead letters), and
//!   acknowledges each one only after it was handled, skipped or dead-lettered. A message left
//!   unfinished when the router stops is nacked with requeue; messages prefetched but not
//!   started go back to the queue when the channel closes. So nothing is acknowledged before it
//!   was dealt with, and a connection lost mid-way means redelivery, which the inbox absorbs.
//!
//! Graceful shutdown ([`RouterHandle::shutdown`]): workers finish the message in hand (one in
//! retry backoff is requeued), acknowledge, close their channels; then the connection closes.

use std::sync::Arc;

use futures::StreamExt;
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::sender::declare;
use super::{AmqpConfig, connect, from_table};
use crate::dlq;
use crate::error::{Error, Result};
use crate::ops::Check;
use crate::process::Processor;
use crate::publisher::Publisher;
use crate::router::Router;
use crate::transport::IncomingMessage;

/// A running router on RabbitMQ. Dropping it starts a graceful shutdown in the background;
/// prefer [`RouterHandle::shutdown`], which waits for it.
#[derive(Debug)]
pub struct RouterHandle {
    shared: Arc<Shared>,
    done: Option<oneshot::Receiver<()>>,
}

struct Shared {
    group: String,
    topics: Vec<String>,
    processor: Processor,
    stop: CancellationToken,
    /// Cancelled by [`RouterHandle::abort`] (together with `stop`).
    abort: CancellationToken,
    broker: Check,
    consuming: Check,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("group", &self.group)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// Starts `router` on RabbitMQ and returns at once: it connects in the background. Each
/// subscribed topic is a durable queue of that name. Dead letters and handler follow-ups go
/// through `publisher` (normally [`Publisher::amqp`], so dead letters land in `<queue>.dlq`).
///
/// Must be called within a tokio runtime.
pub fn start_router(
    router: Router,
    config: &AmqpConfig,
    publisher: Publisher,
) -> Result<RouterHandle> {
    if router.topics.is_empty() {
        return Err(Error::Config(format!(
            "router {:?} subscribes to no queue",
            router.group
        )));
    }
    if router.transactional_id.is_some() {
        // AMQP has no transactions spanning a consume and publishes; silently running the
        // router at-least-once would break the promise its author asked for.
        return Err(Error::Config(format!(
            "router {:?} is exactly-once, which only the Kafka transport supports",
            router.group
        )));
    }
    router.retry.validate().map_err(Error::Config)?;
    config.connect_backoff.validate().map_err(Error::Config)?;
    if router.handlers.is_empty() {
        tracing::warn!(group = %router.group, "router has no handlers: every message will be skipped");
    }
    let shared = Arc::new(Shared {
        group: router.group.clone(),
        topics: router.topics.clone(),
        processor: Processor::new(
            &router,
            publisher,
            super::FEATURES.each_group_gets_every_message,
        ),
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
        broker: router
            .health
            .register(format!("amqp:{}:broker", router.group), "connecting"),
        consuming: router.health.register(
            format!("amqp:{}:consuming", router.group),
            "not consuming yet",
        ),
    });
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(supervise(shared.clone(), config.clone(), done_tx));
    Ok(RouterHandle {
        shared,
        done: Some(done_rx),
    })
}

impl RouterHandle {
    /// Stops gracefully: finishes in-flight messages, acknowledges them, closes the connection.
    pub async fn shutdown(mut self) {
        self.shared.stop.cancel();
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }

    /// Stops at once, as if the process had died: in-flight handlers are dropped mid-way and
    /// nothing more is acknowledged, so those messages are delivered again.
    pub async fn abort(mut self) {
        self.shared.abort.cancel();
        self.shared.stop.cancel();
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }

    /// Whether RabbitMQ is reachable and every queue is being consumed.
    pub fn is_ready(&self) -> bool {
        self.shared.broker.is_ready() && self.shared.consuming.is_ready()
    }

    /// The router's group (on AMQP, a name for logs and metrics).
    pub fn group(&self) -> &str {
        &self.shared.group
    }
}

impl Drop for RouterHandle {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

async fn supervise(shared: Arc<Shared>, config: AmqpConfig, done: oneshot::Sender<()>) {
    let name = format!("ferry-router-{}", shared.group);
    loop {
        let Ok(connection) = connect(&config, &name, Some(&shared.broker), &shared.stop).await
        else {
            break;
        };
        shared.broker.ready();
        let ended = session(&shared, &config, &connection).await;
        shared.consuming.not_ready("not consuming");
        let close = connection.close(200, "stopping".into());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), close).await;
        match ended {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(group = %shared.group, error = %e, "RabbitMQ connection lost; reconnecting");
                shared.broker.not_ready(format!("connection lost: {e}"));
            }
        }
        if shared.stop.is_cancelled() {
            break;
        }
    }
    shared.broker.not_ready("stopped");
    shared.consuming.not_ready("stopped");
    tracing::info!(group = %shared.group, "router stopped");
    let _ = done.send(());
}

/// One connection's life: consume every queue until the router stops (`Ok`) or a worker loses
/// its channel (`Err`, after the other workers finished their message in hand).
async fn session(shared: &Arc<Shared>, config: &AmqpConfig, connection: &Connection) -> Result<()> {
    let session_stop = shared.stop.child_token();
    let mut workers = JoinSet::new();
    for topic in &shared.topics {
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await?;
        declare(&channel, topic).await?;
        declare(&channel, &dlq::topic_for(topic)).await?;
        let tag = format!("ferry-{}-{}", shared.group, Uuid::now_v7().simple());
        let consumer = channel
            .basic_consume(
                topic.as_str().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        workers.spawn(worker(
            shared.clone(),
            channel,
            consumer,
            topic.clone(),
            session_stop.clone(),
        ));
    }
    shared.consuming.ready();
    tracing::info!(group = %shared.group, queues = ?shared.topics, prefetch = config.prefetch, "consuming");

    let mut result = Ok(());
    let mut aborted = false;
    loop {
        let ended = tokio::select! {
            ended = workers.join_next() => ended,
            () = shared.abort.cancelled(), if !aborted => {
                // As if the process died: drop handlers mid-way, acknowledge nothing more.
                aborted = true;
                workers.abort_all();
                continue;
            }
        };
        let Some(ended) = ended else { break };
        let ended = match ended {
            Ok(ended) => ended,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(Error::Task(e.to_string())),
        };
        if let Err(e) = ended {
            if result.is_ok() {
                result = Err(e);
            }
            // The others finish their message in hand, then the session reconnects.
            session_stop.cancel();
        }
    }
    if shared.stop.is_cancelled() {
        return Ok(());
    }
    result
}

/// One queue's worker: deliveries one at a time, acknowledged after processing.
async fn worker(
    shared: Arc<Shared>,
    channel: lapin::Channel,
    mut consumer: lapin::Consumer,
    topic: String,
    stop: CancellationToken,
) -> Result<()> {
    let result = loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => break Ok(()),
            next = consumer.next() => next,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => break Err(e.into()),
            None => {
                break Err(Error::Unavailable(format!(
                    "the broker cancelled the consumer of {topic}"
                )));
            }
        };
        let message = incoming(&topic, &delivery);
        let outcome = shared.processor.process(&message, &stop).await;
        if shared.abort.is_cancelled() {
            break Ok(());
        }
        if outcome.commits() {
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                // The connection went away after the message was dealt with: the broker
                // delivers it again, and the handler's inbox makes that harmless.
                break Err(e.into());
            }
        } else {
            let requeue = BasicNackOptions {
                requeue: true,
                multiple: false,
            };
            let _ = delivery.nack(requeue).await;
            break Ok(());
        }
    };
    if !shared.abort.is_cancelled() {
        // Deliveries prefetched but not started go back to the queue with the channel.
        let _ = channel.close(200, "stopping".into()).await;
    }
    result
}

/// A delivery in the transport-neutral shape: the queue as topic, partition 0, the delivery
/// tag as offset, the key from its header.
fn incoming(queue: &str, delivery: &Delivery) -> IncomingMessage {
    let (headers, key) = from_table(delivery.properties.headers().as_ref());
    IncomingMessage {
        topic: queue.to_owned(),
        partition: 0,
        offset: i64::try_from(delivery.delivery_tag).unwrap_or(i64::MAX),
        key,
        headers,
        payload: delivery.data.clone(),
    }
}
