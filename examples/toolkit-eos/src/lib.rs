//! `toolkit-eos`: a consume-transform-produce service run exactly-once.
//!
//! It reads `OrderPlaced` from an input topic and publishes one `OrderPriced` per order to an
//! output topic, in a router made [`Router::exactly_once`]: each batch's outputs and the
//! consumed offsets commit in one Kafka transaction, so however the process dies, a
//! `read_committed` reader of the output topic sees each order priced exactly once. An order
//! with no items is refused (a permanent handler error) and parked in `<input>.dlq`, in the same
//! transaction.
//!
//! The handler's only effect is the message it publishes: that is what makes exactly-once mode
//! the right tool here. A handler that also wrote to a database would use the normal mode
//! with the SQL outbox and inbox (`ferry_toolkit::sql`).

use std::time::Duration;

use ferry_toolkit::kafka::{self, KafkaConfig, RouterHandle};
use ferry_toolkit::{
    HandlerError, Message, MessageContext, Publisher, RetryPolicy, Router, handler_fn,
};
use serde::{Deserialize, Serialize};

/// An order to price.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The order id (the key).
    pub id: String,
    /// Item prices in cents.
    pub items: Vec<u64>,
}

impl Message for OrderPlaced {
    const TYPE: &'static str = "eos.order-placed";
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// The priced order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderPriced {
    /// The order id.
    pub id: String,
    /// The total in cents.
    pub total: u64,
}

impl Message for OrderPriced {
    const TYPE: &'static str = "eos.order-priced";
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// What the service reads and writes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The consumer group.
    pub group: String,
    /// The topic of `OrderPlaced`.
    pub input: String,
    /// The topic of `OrderPriced`.
    pub output: String,
    /// This instance's transactional id: unique among running instances, stable across its
    /// restarts.
    pub transactional_id: String,
}

/// The exactly-once router.
pub fn router(settings: &Settings) -> Router {
    let output = settings.output.clone();
    Router::new(settings.group.clone())
        .subscribe(settings.input.clone())
        .handle(handler_fn(
            move |order: OrderPlaced, ctx: MessageContext| {
                let output = output.clone();
                async move {
                    if order.items.is_empty() {
                        return Err(HandlerError::permanent("an order without items"));
                    }
                    let total = order.items.iter().sum();
                    ctx.publish(
                        &output,
                        OrderPriced {
                            id: order.id,
                            total,
                        },
                    )
                    .await?;
                    Ok(())
                }
            },
        ))
        .retry(RetryPolicy {
            initial: Duration::from_millis(50),
            max_attempts: 3,
            ..RetryPolicy::default()
        })
        .exactly_once(settings.transactional_id.clone())
}

/// Starts the service's router. The publisher given to the router is not used in exactly-once
/// mode (outputs go through the router's transactional producer), but dead letters of a router
/// switched back to the normal mode would go through it.
pub fn start(settings: &Settings, kafka: &KafkaConfig) -> anyhow::Result<RouterHandle> {
    let publisher = Publisher::kafka(kafka)?;
    Ok(kafka::start_router(router(settings), kafka, publisher)?)
}
