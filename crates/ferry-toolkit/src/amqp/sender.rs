//! The AMQP publisher behind [`crate::Publisher`]: persistent messages, publisher confirms.
//!
//! One connection and one confirm-mode channel, shared by every send; publishes run
//! concurrently on it and each waits for its own confirm. The first send to a topic declares its
//! durable queue (so a message published before any consumer started is kept, as Kafka's
//! auto-created topics keep it). When the connection is gone, the next send reconnects; while
//! reconnecting fails, sends fail at once until the backoff allows the next attempt (one log
//! line per attempt), so a caller such as the outbox relay backs off instead of piling up.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{AmqpConfig, connect_once, to_table};
use crate::envelope::Summary;
use crate::error::{Error, Result};
use crate::transport::{OutgoingMessage, Receipt, SendError, Sender};

/// Sends to RabbitMQ with persistent delivery and publisher confirms. Cheap to clone; clones
/// share the connection.
#[derive(Clone)]
pub struct AmqpSender {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AmqpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSender")
            .field("broker", &self.inner.config.redacted())
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: AmqpConfig,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    live: Option<Live>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

/// The current connection, its channel, and the queues declared on it.
#[derive(Clone)]
struct Live {
    connection: Arc<Connection>,
    channel: Channel,
    declared: Arc<Mutex<HashSet<String>>>,
}

impl Live {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

impl AmqpSender {
    /// A sender for `config`. It connects on the first send: a broker that is down now is not
    /// an error.
    pub fn new(config: &AmqpConfig) -> AmqpSender {
        AmqpSender {
            inner: Arc::new(Inner {
                config: config.clone(),
                state: tokio::sync::Mutex::new(State::default()),
            }),
        }
    }

    /// The live channel, connecting if needed and allowed by the backoff.
    async fn live(&self) -> Result<Live> {
        let mut state = self.inner.state.lock().await;
        if let Some(live) = &state.live {
            if live.usable() {
                return Ok(live.clone());
            }
            tracing::warn!(broker = %self.inner.config.redacted(), "AMQP publisher connection lost; reconnecting");
            if let Some(old) = state.live.take() {
                close(old.connection);
            }
        }
        if let Some(at) = state.retry_at
            && at > Instant::now()
        {
            return Err(Error::Unavailable(state.last_error.clone()));
        }
        let attempt = state.failures + 1;
        tracing::info!(attempt, broker = %self.inner.config.redacted(), "AMQP publisher connecting");
        match self.open().await {
            Ok(live) => {
                tracing::info!(attempt, broker = %self.inner.config.redacted(), "AMQP publisher connected");
                state.failures = 0;
                state.retry_at = None;
                state.live = Some(live.clone());
                Ok(live)
            }
            Err(e) => {
                let delay = self
                    .inner
                    .config
                    .connect_backoff
                    .delay(attempt, &mut rand::rng());
                tracing::warn!(attempt, broker = %self.inner.config.redacted(), error = %e, retry_in = ?delay, "AMQP publisher cannot connect");
                state.failures = attempt;
                state.retry_at = Some(Instant::now() + delay);
                state.last_error = e.to_string();
                Err(e)
            }
        }
    }

    async fn open(&self) -> Result<Live> {
        let connection = connect_once(&self.inner.config, "ferry-publisher").await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Live {
            connection: Arc::new(connection),
            channel,
            declared: Arc::default(),
        })
    }

    async fn publish(&self, live: &Live, message: &OutgoingMessage) -> Result<()> {
        if !live.declared.lock().contains(&message.topic) {
            declare(&live.channel, &message.topic).await?;
            live.declared.lock().insert(message.topic.clone());
        }
        let confirm = live
            .channel
            .basic_publish(
                "".into(),
                message.topic.as_str().into(),
                // A message no queue takes comes back as an error instead of vanishing.
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.payload,
                properties(message),
            )
            .await?;
        let timeout = self.inner.config.confirm_timeout;
        let confirmation = tokio::time::timeout(timeout, confirm).await.map_err(|_| {
            Error::Unavailable(format!("no publisher confirm within {timeout:?}"))
        })??;
        if confirmation.is_nack() {
            return Err(Error::Rejected("the broker nacked the message".into()));
        }
        if let Some(returned) = confirmation.take_message() {
            return Err(Error::Rejected(format!(
                "no queue took the message: {} {}",
                returned.reply_code, returned.reply_text
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Sender for AmqpSender {
    async fn send(&self, message: OutgoingMessage) -> Result<Receipt, SendError> {
        let live = match self.live().await {
            Ok(live) => live,
            Err(error) => return Err(SendError { message, error }),
        };
        match self.publish(&live, &message).await {
            Ok(()) => Ok(Receipt::default()),
            Err(error) => Err(SendError { message, error }),
        }
    }
}

/// Declares `queue` durable, with no arguments, so every declaration of it (by publishers,
/// routers and other services) agrees.
pub(crate) async fn declare(channel: &Channel, queue: &str) -> Result<()> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Persistent delivery, JSON, the headers (envelope and key), and the envelope's ids as AMQP
/// properties too, for tools that show those.
fn properties(message: &OutgoingMessage) -> BasicProperties {
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_headers(to_table(&message.headers, message.key.as_deref()));
    let summary = Summary::of(&message.headers);
    let short = |v: Option<String>| v.filter(|v| v.len() <= 255);
    if let Some(id) = short(summary.message_id) {
        properties = properties.with_message_id(id.into());
    }
    if let Some(type_name) = short(summary.type_name) {
        properties = properties.with_type(type_name.into());
    }
    if let Some(correlation) = short(summary.correlation_id) {
        properties = properties.with_correlation_id(correlation.into());
    }
    if let Some(ms) = summary.produced_at_millis {
        properties = properties.with_timestamp(ms / 1000);
    }
    properties
}

/// Closes a connection in the background, bounded, without holding up the caller.
pub(crate) fn close(connection: Arc<Connection>) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            connection.close(200, "reconnecting".into()),
        )
        .await;
    });
}
