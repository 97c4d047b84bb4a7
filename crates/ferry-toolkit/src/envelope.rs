//! The envelope: what every message carries besides its payload, and the typed [`Message`] trait.
//!
//! The envelope travels in transport headers, never inside the payload, so a payload is plain
//! JSON of the message type and any consumer can read it. The header names below are a wire
//! contract between services: renaming one breaks every service that reads it.
//!
//! | header | value |
//! | --- | --- |
//! | `ferry-message-id` | UUID v7 of this message (time-ordered), the key of inbox de-duplication |
//! | `ferry-type` | the message type name, [`Message::TYPE`]; the router dispatches on it |
//! | `ferry-version` | the schema version, [`Message::VERSION`], decimal |
//! | `ferry-correlation-id` | UUID shared by every message of one flow (the first message's id) |
//! | `ferry-causation-id` | UUID of the message whose handling produced this one (absent for the first) |
//! | `traceparent` | W3C Trace Context of the producing span |
//! | `ferry-produced-at` | milliseconds since the Unix epoch, decimal, when the message was built |
//! | `ferry-reply-to` | (requests only) the topic the reply goes to |
//! | `ferry-stream-version` | (event-sourced events only) the event's version in its stream, decimal, from 1 |
//!
//! Dead letters add `ferry-dlq-*` headers (see [`crate::dlq`]). All values are UTF-8 text.
//!
//! `ferry-stream-version` lets a consumer apply one entity's events exactly once and in order
//! without remembering every message id: it keeps the last version it applied per entity (the
//! message key) and applies a message only at `last + 1`; a lower version is a redelivery, a
//! higher one a gap to fill first. It is a header, not a payload field, because it is a fact
//! about where the event sits in the event store, not part of the event, and because the payload
//! then stays exactly the event's JSON, as stored.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::traceparent::TraceParent;

/// The envelope header names.
pub mod header {
    /// UUID v7 of the message.
    pub const MESSAGE_ID: &str = "ferry-message-id";
    /// The message type name.
    pub const TYPE: &str = "ferry-type";
    /// The message schema version.
    pub const VERSION: &str = "ferry-version";
    /// The flow's correlation id.
    pub const CORRELATION_ID: &str = "ferry-correlation-id";
    /// The id of the message that caused this one.
    pub const CAUSATION_ID: &str = "ferry-causation-id";
    /// W3C Trace Context.
    pub const TRACEPARENT: &str = "traceparent";
    /// Production time, Unix epoch milliseconds.
    pub const PRODUCED_AT: &str = "ferry-produced-at";
    /// The topic a reply to this request goes to.
    pub const REPLY_TO: &str = "ferry-reply-to";
    /// The event's version in its event-sourced stream.
    pub const STREAM_VERSION: &str = "ferry-stream-version";
}

/// A typed message: a serde type with a stable type name and an entity key.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct OrderPlaced { order_id: String, total_cents: u64 }
///
/// impl ferry_toolkit::Message for OrderPlaced {
///     const TYPE: &'static str = "orders.order-placed";
///     fn key(&self) -> String { self.order_id.clone() }
/// }
/// ```
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The type name on the wire (`ferry-type`). Never change it once messages are out.
    const TYPE: &'static str;
    /// The schema version (`ferry-version`). Bump it on an incompatible change.
    const VERSION: u32 = 1;
    /// The payload's fields that hold secrets (a password hash, a card number), as they are
    /// spelled on the wire, at any depth. Whatever shows or logs a payload outside the service
    /// that owns it replaces their values first ([`crate::redact`]); fields whose name says
    /// password, secret or token are redacted without being listed here.
    const SENSITIVE_FIELDS: &'static [&'static str] = &[];
    /// The entity id: the partition key, so one entity's messages stay in order.
    fn key(&self) -> String;
}

/// Transport headers: an ordered list of names and byte values, as Kafka keeps them.
///
/// A Kafka header with a null value is read as an empty value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// The value of the first header called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The value of `name` as UTF-8 text, if present and valid.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Sets `name` to `value`, replacing any headers of that name.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        let name = name.into();
        self.remove(&name);
        self.0.push((name, value.into()));
    }

    /// Appends a header even if one of that name exists (Kafka allows repeats).
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.0.push((name.into(), value.into()));
    }

    /// Removes every header called `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    /// Keeps only the headers for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|(n, _)| keep(n));
    }

    /// The headers in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

impl<N: Into<String>, V: Into<Vec<u8>>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Headers {
        Headers(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

/// A message's metadata, read from or written to [`Headers`]. It holds no payload, so its
/// `Debug` is safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// This message's id (UUID v7).
    pub message_id: Uuid,
    /// The message type name.
    pub type_name: String,
    /// The schema version.
    pub version: u32,
    /// The flow this message belongs to.
    pub correlation_id: Uuid,
    /// The message whose handling produced this one.
    pub causation_id: Option<Uuid>,
    /// The producing span.
    pub traceparent: TraceParent,
    /// When the message was built (millisecond precision on the wire).
    pub produced_at: SystemTime,
    /// For a request, the topic its reply goes to.
    pub reply_to: Option<String>,
    /// For an event from an event store, its version in its stream (1 for the stream's first
    /// event, no gaps); `None` for every other message. Set by the event store when it stages
    /// the event, never inherited by follow-ups.
    pub stream_version: Option<i64>,
}

impl Envelope {
    /// A fresh envelope for the first message of a new flow: a new id, correlation id = message
    /// id, a new trace.
    pub fn new<M: Message>() -> Envelope {
        let message_id = Uuid::now_v7();
        Envelope {
            message_id,
            type_name: M::TYPE.to_owned(),
            version: M::VERSION,
            correlation_id: message_id,
            causation_id: None,
            traceparent: TraceParent::new_root(),
            produced_at: SystemTime::now(),
            reply_to: None,
            stream_version: None,
        }
    }

    /// An envelope for a message caused by `self`: same correlation id, causation id = this
    /// message's id, and `traceparent` = `trace` (the span that handled `self`).
    pub fn follow_up<M: Message>(&self, trace: TraceParent) -> Envelope {
        Envelope {
            correlation_id: self.correlation_id,
            causation_id: Some(self.message_id),
            traceparent: trace,
            ..Envelope::new::<M>()
        }
    }

    /// Writes the envelope into `headers`, replacing any envelope headers already there.
    pub fn write_to(&self, headers: &mut Headers) {
        headers.insert(header::MESSAGE_ID, self.message_id.to_string());
        headers.insert(header::TYPE, self.type_name.clone());
        headers.insert(header::VERSION, self.version.to_string());
        headers.insert(header::CORRELATION_ID, self.correlation_id.to_string());
        match self.causation_id {
            Some(id) => headers.insert(header::CAUSATION_ID, id.to_string()),
            None => headers.remove(header::CAUSATION_ID),
        }
        headers.insert(header::TRACEPARENT, self.traceparent.to_string());
        let millis = self
            .produced_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        headers.insert(header::PRODUCED_AT, millis.to_string());
        match &self.reply_to {
            Some(topic) => headers.insert(header::REPLY_TO, topic.clone()),
            None => headers.remove(header::REPLY_TO),
        }
        match self.stream_version {
            Some(version) => headers.insert(header::STREAM_VERSION, version.to_string()),
            None => headers.remove(header::STREAM_VERSION),
        }
    }

    /// Reads an envelope. The id and type are required. A message from a producer that sets
    /// only those is still accepted: the rest default (version 1, correlation id = message id,
    /// a new trace, produced now), but a header that is present and malformed is an error.
    pub fn read_from(headers: &Headers) -> Result<Envelope> {
        let message_id = required(headers, header::MESSAGE_ID)?;
        let message_id = parse(header::MESSAGE_ID, message_id)?;
        let type_name = required(headers, header::TYPE)?.to_owned();
        if type_name.is_empty() {
            return Err(Error::BadHeader {
                name: header::TYPE,
                value: type_name,
            });
        }
        let version = optional(headers, header::VERSION)?
            .map(|v| parse(header::VERSION, v))
            .transpose()?
            .unwrap_or(1);
        let correlation_id = optional(headers, header::CORRELATION_ID)?
            .map(|v| parse(header::CORRELATION_ID, v))
            .transpose()?
            .unwrap_or(message_id);
        let causation_id = optional(headers, header::CAUSATION_ID)?
            .map(|v| parse(header::CAUSATION_ID, v))
            .transpose()?;
        let traceparent = optional(headers, header::TRACEPARENT)?
            .map(|v| parse(header::TRACEPARENT, v))
            .transpose()?
            .unwrap_or_else(TraceParent::new_root);
        let produced_at = optional(headers, header::PRODUCED_AT)?
            .map(|v| parse::<u64>(header::PRODUCED_AT, v))
            .transpose()?
            .map_or_else(SystemTime::now, |ms| UNIX_EPOCH + Duration::from_millis(ms));
        let reply_to = optional(headers, header::REPLY_TO)?.map(str::to_owned);
        let stream_version = optional(headers, header::STREAM_VERSION)?
            .map(|v| match parse::<i64>(header::STREAM_VERSION, v)? {
                version if version >= 1 => Ok(version),
                _ => Err(Error::BadHeader {
                    name: header::STREAM_VERSION,
                    value: v.to_owned(),
                }),
            })
            .transpose()?;
        Ok(Envelope {
            message_id,
            type_name,
            version,
            correlation_id,
            causation_id,
            traceparent,
            produced_at,
            reply_to,
            stream_version,
        })
    }
}

fn required<'a>(headers: &'a Headers, name: &'static str) -> Result<&'a str> {
    optional(headers, name)?.ok_or(Error::MissingHeader(name))
}

fn optional<'a>(headers: &'a Headers, name: &'static str) -> Result<Option<&'a str>> {
    match headers.get(name) {
        None => Ok(None),
        Some(bytes) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::BadHeader {
                name,
                value: String::from_utf8_lossy(bytes).into_owned(),
            }),
    }
}

fn parse<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T> {
    value.parse().map_err(|_| Error::BadHeader {
        name,
        value: value.to_owned(),
    })
}

/// Serializes a message to its JSON payload.
pub fn encode<M: Message>(message: &M) -> Result<Vec<u8>> {
    serde_json::to_vec(message).map_err(|source| Error::Encode {
        type_name: M::TYPE,
        source,
    })
}

/// Deserializes a JSON payload as `M`.
pub fn decode<M: Message>(payload: &[u8]) -> Result<M> {
    serde_json::from_slice(payload).map_err(|source| Error::Decode {
        type_name: M::TYPE.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Ping {
        id: String,
    }

    impl Message for Ping {
        const TYPE: &'static str = "test.ping";
        const VERSION: u32 = 3;
        fn key(&self) -> String {
            self.id.clone()
        }
    }

    #[test]
    fn envelope_round_trips_through_headers() {
        let first = Envelope::new::<Ping>();
        let mut second = first.follow_up::<Ping>(first.traceparent.child());
        second.reply_to = Some("replies".into());
        let mut event = Envelope::new::<Ping>();
        event.stream_version = Some(42);
        for envelope in [first.clone(), second.clone(), event.clone()] {
            let mut headers = Headers::new();
            envelope.write_to(&mut headers);
            let mut read = Envelope::read_from(&headers).unwrap();
            // The wire keeps milliseconds.
            let millis = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
            assert_eq!(millis(read.produced_at), millis(envelope.produced_at));
            read.produced_at = envelope.produced_at;
            assert_eq!(read, envelope);
        }
        assert_eq!(second.correlation_id, first.message_id);
        assert_eq!(second.causation_id, Some(first.message_id));
        assert_eq!(second.traceparent.trace_id(), first.traceparent.trace_id());
        assert_eq!(first.version, 3);
        assert_eq!(first.message_id.get_version_num(), 7);
        assert_eq!(first.stream_version, None);
        let mut headers = Headers::new();
        event.write_to(&mut headers);
        assert_eq!(headers.get_str(header::STREAM_VERSION), Some("42"));
        // A follow-up is another message, not the event: it carries no stream version.
        let follow_up = event.follow_up::<Ping>(event.traceparent.child());
        assert_eq!(follow_up.stream_version, None);
        follow_up.write_to(&mut headers);
        assert_eq!(headers.get(header::STREAM_VERSION), None);
    }

    #[track_caller]
    fn check_read(headers: &[(&str, &str)], expected: std::result::Result<(), &str>) {
        let headers: Headers = headers.iter().map(|(n, v)| (*n, *v)).collect();
        let got = Envelope::read_from(&headers)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(got.as_ref().map(|_| ()).map_err(String::as_str), expected);
    }

    #[test]
    fn reading_requires_id_and_type_and_rejects_malformed_headers() {
        let id = Uuid::now_v7().to_string();
        let id = id.as_str();
        check_read(&[(header::MESSAGE_ID, id), (header::TYPE, "t")], Ok(()));
        check_read(
            &[(header::TYPE, "t")],
            Err("missing header ferry-message-id"),
        );
        check_read(
            &[(header::MESSAGE_ID, id)],
            Err("missing header ferry-type"),
        );
        check_read(
            &[(header::MESSAGE_ID, "nope"), (header::TYPE, "t")],
            Err("bad header ferry-message-id: \"nope\""),
        );
        check_read(
            &[(header::MESSAGE_ID, id), (header::TYPE, "")],
            Err("bad header ferry-type: \"\""),
        );
        check_read(
            &[
                (header::MESSAGE_ID, id),
                (header::TYPE, "t"),
                (header::VERSION, "x"),
            ],
            Err("bad header ferry-version: \"x\""),
        );
        check_read(
            &[
                (header::MESSAGE_ID, id),
                (header::TYPE, "t"),
                (header::TRACEPARENT, "00-zz"),
            ],
            Err("bad header traceparent: \"00-zz\""),
        );
        check_read(
            &[
                (header::MESSAGE_ID, id),
                (header::TYPE, "t"),
                (header::STREAM_VERSION, "7"),
            ],
            Ok(()),
        );
        for bad in ["0", "-1", "x"] {
            check_read(
                &[
                    (header::MESSAGE_ID, id),
                    (header::TYPE, "t"),
                    (header::STREAM_VERSION, bad),
                ],
                Err(format!("bad header ferry-stream-version: \"{bad}\"").as_str()),
            );
        }
    }

    #[test]
    fn headers_debug_shows_text_values() {
        let headers: Headers = [("a", "1")].into_iter().collect();
        assert_eq!(format!("{headers:?}"), r#"{"a": "1"}"#);
    }
}
