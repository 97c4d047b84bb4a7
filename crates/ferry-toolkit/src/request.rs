//! Request/reply over topics.
//!
//! A [`Requester`] owns a reply topic that a transport reader (`crate::kafka::start_requester`)
//! reads from its end. [`Requester::request`] publishes the request with a fresh correlation
//! id and `ce_replyto` = the reply topic, then waits for a message on the reply topic with
//! that correlation id. The replier is an ordinary router handler that calls
//! [`crate::MessageContext::reply`].
//!
//! Replies nobody waits for are counted in `ferry_replies_dropped_total` and dropped:
//! `expired` for a request that already timed out, `unknown` otherwise (for example replies
//! meant for another instance that shares the reply topic).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use crate::envelope::{self, Envelope, Message, header};
use crate::error::Error;
use crate::ops::metrics;
use crate::publisher::{PublishError, Publisher};
use crate::transport::IncomingMessage;

/// How many timed-out correlation ids are remembered, to tell late replies from unknown ones.
const EXPIRED_MEMORY: usize = 10_000;

/// Sends requests and awaits their replies. Dropping it stops its reply reader.
pub struct Requester {
    publisher: Publisher,
    reply_topic: String,
    pending: Arc<Pending>,
    _reader: DropGuard,
}

impl fmt::Debug for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requester")
            .field("reply_topic", &self.reply_topic)
            .field("waiting", &self.pending.waiting.lock().len())
            .finish()
    }
}

/// The requests waiting for replies, shared with the transport's reply reader.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The `service` label of its metrics (set by [`Requester::new`]).
    service: std::sync::OnceLock<&'static str>,
    waiting: Mutex<HashMap<Uuid, oneshot::Sender<IncomingMessage>>>,
    expired: Mutex<(VecDeque<Uuid>, HashSet<Uuid>)>,
}

impl Requester {
    /// A requester whose replies arrive on `reply_topic` and are fed to [`Pending::deliver`]
    /// by a reader that stops when `reader` is cancelled.
    pub(crate) fn new(
        publisher: Publisher,
        reply_topic: String,
        pending: Arc<Pending>,
        reader: CancellationToken,
    ) -> Requester {
        let _ = pending.service.set(publisher.service());
        Requester {
            publisher,
            reply_topic,
            pending,
            _reader: reader.drop_guard(),
        }
    }

    /// The topic replies come back on.
    pub fn reply_topic(&self) -> &str {
        &self.reply_topic
    }

    /// Publishes `request` to `topic` and waits up to `timeout` for its reply. The timeout
    /// starts once the request is acknowledged by the broker.
    pub async fn request<Req: Message, Resp: Message>(
        &self,
        topic: &str,
        request: Req,
        timeout: Duration,
    ) -> Result<Resp, RequestError<Req>> {
        let mut envelope = Envelope::new::<Req>();
        envelope.reply_to = Some(self.reply_topic.clone());
        let correlation_id = envelope.correlation_id;
        // Register before publishing: a fast replier may answer before `publish` returns.
        let (tx, mut rx) = oneshot::channel();
        self.pending.waiting.lock().insert(correlation_id, tx);
        if let Err(e) = self.publisher.publish_with(topic, request, envelope).await {
            self.pending.waiting.lock().remove(&correlation_id);
            return Err(RequestError::NotSent(e));
        }
        let reply = match tokio::time::timeout(timeout, &mut rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(RequestError::Failed(Error::Stopped)),
            Err(_) => {
                self.pending.expire(correlation_id);
                // A reply that raced the timer is still a reply.
                match rx.try_recv() {
                    Ok(reply) => reply,
                    Err(_) => return Err(RequestError::Timeout(timeout)),
                }
            }
        };
        let reply_envelope = Envelope::read_from(&reply.headers).map_err(RequestError::Failed)?;
        if reply_envelope.type_name != Resp::TYPE {
            return Err(RequestError::Failed(Error::UnexpectedReply {
                expected: Resp::TYPE,
                got: reply_envelope.type_name,
            }));
        }
        envelope::decode::<Resp>(&reply.payload).map_err(RequestError::Failed)
    }
}

impl Pending {
    fn service(&self) -> &'static str {
        self.service.get().copied().unwrap_or("")
    }

    /// Hands a reply to the request waiting for it, or counts and drops it.
    pub(crate) fn deliver(&self, reply: IncomingMessage) {
        let correlation_id = reply
            .headers
            .get_str(header::CORRELATION_ID)
            .and_then(|v| v.parse::<Uuid>().ok());
        let Some(correlation_id) = correlation_id else {
            tracing::debug!(topic = %reply.topic, offset = reply.offset, "reply without a correlation id, dropped");
            metrics::reply_dropped(self.service(), &reply.topic, "unknown");
            return;
        };
        let waiter = self.waiting.lock().remove(&correlation_id);
        let topic = reply.topic.clone();
        match waiter {
            Some(tx) => {
                if tx.send(reply).is_err() {
                    // The caller gave up (its future was dropped) before the reply came.
                    metrics::reply_dropped(self.service(), &topic, "expired");
                }
            }
            None if self.expired.lock().1.contains(&correlation_id) => {
                tracing::debug!(%correlation_id, "reply to an expired request, dropped");
                metrics::reply_dropped(self.service(), &topic, "expired");
            }
            None => {
                tracing::debug!(%correlation_id, "reply to an unknown request, dropped");
                metrics::reply_dropped(self.service(), &topic, "unknown");
            }
        }
    }

    fn expire(&self, correlation_id: Uuid) {
        self.waiting.lock().remove(&correlation_id);
        let mut expired = self.expired.lock();
        let (order, set) = &mut *expired;
        if set.insert(correlation_id) {
            order.push_back(correlation_id);
        }
        while order.len() > EXPIRED_MEMORY {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }
}

/// A request that failed.
pub enum RequestError<Req> {
    /// The request was not published; it is handed back.
    NotSent(PublishError<Req>),
    /// It was published, but no reply came in time.
    Timeout(Duration),
    /// A reply came but could not be used, or the requester stopped.
    Failed(Error),
}

impl<Req: Message> fmt::Debug for RequestError<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotSent(e) => f.debug_tuple("NotSent").field(e).finish(),
            RequestError::Timeout(d) => f.debug_tuple("Timeout").field(d).finish(),
            RequestError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<Req: Message> fmt::Display for RequestError<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotSent(e) => write!(f, "request not sent: {e}"),
            RequestError::Timeout(d) => {
                write!(f, "no reply to the {} request within {d:?}", Req::TYPE)
            }
            RequestError::Failed(e) => write!(f, "request failed: {e}"),
        }
    }
}

impl<Req: Message> std::error::Error for RequestError<Req> {}
