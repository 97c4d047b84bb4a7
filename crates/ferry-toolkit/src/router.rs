//! The router: a consumer group's handler set, independent of any transport.
//!
//! A [`Router`] names its consumer group and topics, maps type names to handlers, and carries
//! the retry policy. A transport adapter runs it: `crate::kafka::start_router` gives each
//! assigned partition an ordered worker that feeds messages one at a time to the shared
//! processing logic in `crate::process`, which decides handled / retried / dead-lettered /
//! skipped. So every transport gets the same semantics.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::envelope::{self, Message};
use crate::error::{Error, Result};
use crate::handler::{Handler, HandlerError, MessageContext};
use crate::ops::Health;
use crate::plain::PlainTyping;
use crate::retry::RetryPolicy;

/// A consumer group's handlers and settings. Build it, then start it with a transport.
///
/// ```no_run
/// # use ferry_toolkit::{handler_fn, HandlerError, Message, MessageContext, Router, RetryPolicy};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderPlaced { id: String }
/// # impl Message for OrderPlaced { const TYPE: &'static str = "order-placed"; fn key(&self) -> String { self.id.clone() } }
/// let router = Router::new("billing")
///     .subscribe("orders")
///     .handle(handler_fn(|order: OrderPlaced, _ctx: MessageContext| async move {
///         println!("bill {}", order.id);
///         Ok::<_, HandlerError>(())
///     }))
///     .retry(RetryPolicy::default());
/// ```
pub struct Router {
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    pub(crate) handlers: HashMap<&'static str, Arc<dyn ErasedHandler>>,
    pub(crate) retry: RetryPolicy,
    pub(crate) health: Health,
    /// The transactional id when the router runs exactly-once (see [`Router::exactly_once`]).
    pub(crate) transactional_id: Option<String>,
    /// How to type messages without an envelope, per topic (see [`Router::plain`]).
    pub(crate) plain: HashMap<String, PlainTyping>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types: Vec<_> = self.handlers.keys().collect();
        types.sort();
        f.debug_struct("Router")
            .field("group", &self.group)
            .field("topics", &self.topics)
            .field("types", &types)
            .field("retry", &self.retry)
            .field("transactional_id", &self.transactional_id)
            .field("plain", &self.plain)
            .finish()
    }
}

impl Router {
    /// A router for consumer group `group`, with the default retry policy.
    pub fn new(group: impl Into<String>) -> Router {
        Router {
            group: group.into(),
            topics: Vec::new(),
            handlers: HashMap::new(),
            retry: RetryPolicy::default(),
            health: Health::new(),
            transactional_id: None,
            plain: HashMap::new(),
        }
    }

    /// Adds a topic to consume.
    pub fn subscribe(mut self, topic: impl Into<String>) -> Router {
        let topic = topic.into();
        if !self.topics.contains(&topic) {
            self.topics.push(topic);
        }
        self
    }

    /// Registers the handler for messages of type `M`.
    ///
    /// # Panics
    ///
    /// If a handler for `M::TYPE` is already registered: one type, one handler per group.
    ///
    /// If `M` has a [`Message::json_schema`] that is not a valid draft-07 schema: a bug in the
    /// message type, found at start rather than per message.
    pub fn handle<M: Message, H: Handler<M>>(mut self, handler: H) -> Router {
        let validator = M::json_schema().map(|schema| {
            jsonschema::draft7::new(&schema).unwrap_or_else(|e| {
                panic!(
                    "the JSON Schema of {:?} is not a valid schema: {e}",
                    M::TYPE
                )
            })
        });
        let erased: Arc<dyn ErasedHandler> = Arc::new(Typed {
            handler,
            validator,
            _message: PhantomData::<fn(M)>,
        });
        assert!(
            self.handlers.insert(M::TYPE, erased).is_none(),
            "a handler for {:?} is already registered",
            M::TYPE
        );
        self
    }

    /// Types the messages on `topic` that carry no envelope (no CloudEvents and no `ferry-*`
    /// headers), as plain producers send them; see [`PlainTyping`]. Without this they are
    /// dead-lettered as undecodable. Messages with an envelope are read as always.
    pub fn plain(mut self, topic: impl Into<String>, typing: PlainTyping) -> Router {
        self.plain.insert(topic.into(), typing);
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Router {
        self.retry = policy;
        self
    }

    /// Runs the router exactly-once on Kafka: each batch of a partition's messages is one Kafka
    /// transaction holding every message its handlers published (through the
    /// [`MessageContext`]), its dead letters and the consumed offsets
    /// (`send_offsets_to_transaction`), committed together or not at all. A crash or a
    /// rebalance at any point leaves either the whole batch's effects or none of them, so a
    /// `read_committed` reader of the outputs sees each output exactly once.
    ///
    /// Only for handlers whose *only* effects are Kafka messages published through the
    /// context: a handler attempt may run more than once (an aborted transaction is retried),
    /// so a database write or an HTTP call in it is not exactly-once. For those, keep the normal
    /// mode and the outbox/inbox ([`crate::sql`]). Readers of the outputs must use
    /// `isolation.level=read_committed` (a `read_uncommitted` reader also sees aborted writes).
    ///
    /// `transactional_id` must be unique among the running instances and stable across restarts
    /// of one instance (e.g. `<group>-<pod ordinal>`): a restarted instance then fences its
    /// previous incarnation and aborts its open transaction at once, instead of the broker
    /// waiting out `transaction.timeout.ms`. Correctness across instances does not depend on it:
    /// offsets are committed with the consumer's group metadata (KIP-447), so a member that
    /// lost its partitions cannot commit for them.
    ///
    /// Published messages are buffered until the handler returns `Ok` and produced in the
    /// transaction afterwards, so a failed attempt's messages are simply dropped and a
    /// publish through the context returns a [`crate::Receipt`] without partition or offset.
    /// Dead letters are produced in the same transaction as the batch's outputs and offsets.
    /// Kafka only: the AMQP transport refuses such a router.
    pub fn exactly_once(mut self, transactional_id: impl Into<String>) -> Router {
        self.transactional_id = Some(transactional_id.into());
        self
    }

    /// The transactional id, if the router runs exactly-once.
    pub fn transactional_id(&self) -> Option<&str> {
        self.transactional_id.as_deref()
    }

    /// Reports readiness (broker reachable, group joined) into `health`.
    pub fn health(mut self, health: &Health) -> Router {
        self.health = health.clone();
        self
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The subscribed topics.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The message types this router handles, sorted, each with its JSON Schema if it has one
    /// (what an AsyncAPI document lists as consumed).
    pub fn message_types(&self) -> Vec<(&'static str, Option<serde_json::Value>)> {
        let mut types: Vec<_> = self
            .handlers
            .iter()
            .map(|(name, handler)| (*name, handler.schema()))
            .collect();
        types.sort_by_key(|(name, _)| *name);
        types
    }

    /// Whether a handler is registered for `type_name`.
    pub fn handles(&self, type_name: &str) -> bool {
        self.handlers.contains_key(type_name)
    }
}

/// A handler with its message type erased: decodes the payload, then calls the typed handler.
pub(crate) trait ErasedHandler: Send + Sync {
    /// Decodes `payload`; `Err` means it is not valid for the handler's type.
    fn call<'a>(
        &'a self,
        payload: &[u8],
        ctx: &'a MessageContext,
    ) -> Result<BoxFuture<'a, Result<(), HandlerError>>>;

    /// The message type's JSON Schema, if it has one.
    fn schema(&self) -> Option<serde_json::Value>;
}

struct Typed<M, H> {
    handler: H,
    /// The message type's schema, compiled once.
    validator: Option<jsonschema::Validator>,
    _message: PhantomData<fn(M)>,
}

/// How many schema violations a dead letter lists (one is usually enough to act on).
const SHOWN_VIOLATIONS: usize = 3;

impl<M: Message, H: Handler<M>> ErasedHandler for Typed<M, H> {
    fn schema(&self) -> Option<serde_json::Value> {
        M::json_schema()
    }

    fn call<'a>(
        &'a self,
        payload: &[u8],
        ctx: &'a MessageContext,
    ) -> Result<BoxFuture<'a, Result<(), HandlerError>>> {
        let message = match &self.validator {
            None => envelope::decode::<M>(payload)?,
            Some(validator) => {
                let value: serde_json::Value =
                    serde_json::from_slice(payload).map_err(|source| Error::Decode {
                        type_name: M::TYPE.to_owned(),
                        source,
                    })?;
                let violations: Vec<String> = validator
                    .iter_errors(&value)
                    .take(SHOWN_VIOLATIONS)
                    .map(|e| format!("at {:?}: {e}", e.instance_path().to_string()))
                    .collect();
                if !violations.is_empty() {
                    return Err(Error::Schema {
                        type_name: M::TYPE,
                        violations: violations.join("; "),
                    });
                }
                serde_json::from_value(value).map_err(|source| Error::Decode {
                    type_name: M::TYPE.to_owned(),
                    source,
                })?
            }
        };
        Ok(self.handler.handle(message, ctx))
    }
}
