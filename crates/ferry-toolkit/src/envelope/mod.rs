//! The envelope: what every message carries besides its payload, and the typed [`Message`] trait.
//!
//! The envelope is a CloudEvent in the Kafka protocol binding's *binary content mode*
//! (CloudEvents 1.0): the attributes travel in `ce_*` headers, never inside the payload, so the
//! payload is plain JSON of the message type and any consumer can read it. The header names
//! below are a wire contract between services: renaming one breaks every service that reads it.
//!
//! | header | value |
//! | --- | --- |
//! | `ce_specversion` | `1.0` |
//! | `ce_id` | UUID v7 of this message (time-ordered), the key of inbox de-duplication |
//! | `ce_source` | the sending service, `/ferry/<service>` (set by its [`crate::Publisher`]) |
//! | `ce_type` | the message type name, [`Message::TYPE`]; the router dispatches on it |
//! | `ce_time` | when the message was built, RFC 3339 with milliseconds, UTC |
//! | `content-type` | `application/json` (the CloudEvents `datacontenttype`) |
//! | `ce_schemaversion` | extension: the schema version, [`Message::VERSION`], decimal |
//! | `ce_correlationid` | extension: UUID shared by every message of one flow (the first message's id) |
//! | `ce_causationid` | extension: UUID of the message whose handling produced this one (absent for the first) |
//! | `ce_traceparent` and `traceparent` | the distributed-tracing extension, W3C Trace Context of the producing span; also as the plain header that Kafka tracing instrumentations read |
//! | `ce_replyto` | extension, requests only: the topic the reply goes to |
//! | `ce_streamversion` | extension, event-sourced events only: the event's version in its stream, decimal, from 1 |
//!
//! Reading ([`open`]) also accepts the *structured* mode (`content-type:
//! application/cloudevents+json`, the event's attributes and `data` in the payload), the
//! `ferry-*` headers Ferry wrote before it spoke CloudEvents ([`legacy_header`]), so older
//! topics stay readable, and plain messages with no envelope at all when the router was told how
//! to type them ([`crate::PlainTyping`]). A CloudEvents `id` that is not a UUID (any string is a
//! valid id) is mapped to a UUID v5 of `source` and `id`, which together are unique by the spec,
//! so the inbox still applies it once.
//!
//! Dead letters add `ferry-dlq-*` headers (see [`crate::dlq`]). All values are UTF-8 text.
//!
//! `ce_streamversion` lets a consumer apply one entity's events exactly once and in order
//! without remembering every message id: it keeps the last version it applied per entity (the
//! message key) and applies a message only at `last + 1`; a lower version is a redelivery, a
//! higher one a gap to fill first. It is a header, not a payload field, because it is a fact
//! about where the event sits in the event store, not part of the event, and because the payload
//! then stays exactly the event's JSON, as stored.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::traceparent::TraceParent;

mod open;

pub use open::{Opened, Summary, open};

/// The envelope header names: CloudEvents attributes in the Kafka binding's binary mode.
pub mod header {
    /// The CloudEvents version, always `1.0`.
    pub const SPEC_VERSION: &str = "ce_specversion";
    /// UUID v7 of the message (CloudEvents `id`).
    pub const MESSAGE_ID: &str = "ce_id";
    /// The sending service (CloudEvents `source`).
    pub const SOURCE: &str = "ce_source";
    /// The message type name (CloudEvents `type`).
    pub const TYPE: &str = "ce_type";
    /// When the message was built (CloudEvents `time`), RFC 3339.
    pub const TIME: &str = "ce_time";
    /// The payload's media type (CloudEvents `datacontenttype`).
    pub const CONTENT_TYPE: &str = "content-type";
    /// The message schema version (extension).
    pub const VERSION: &str = "ce_schemaversion";
    /// The flow's correlation id (extension).
    pub const CORRELATION_ID: &str = "ce_correlationid";
    /// The id of the message that caused this one (extension).
    pub const CAUSATION_ID: &str = "ce_causationid";
    /// W3C Trace Context as the CloudEvents distributed-tracing extension.
    pub const CE_TRACEPARENT: &str = "ce_traceparent";
    /// W3C Trace Context as the plain header tracing instrumentations read.
    pub const TRACEPARENT: &str = "traceparent";
    /// The topic a reply to this request goes to (extension).
    pub const REPLY_TO: &str = "ce_replyto";
    /// The event's version in its event-sourced stream (extension).
    pub const STREAM_VERSION: &str = "ce_streamversion";
}

/// The headers Ferry wrote before its envelope was a CloudEvent; still read, never written.
pub mod legacy_header {
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
    /// Production time, Unix epoch milliseconds.
    pub const PRODUCED_AT: &str = "ferry-produced-at";
    /// The topic a reply to this request goes to.
    pub const REPLY_TO: &str = "ferry-reply-to";
    /// The event's version in its event-sourced stream.
    pub const STREAM_VERSION: &str = "ferry-stream-version";
}

/// The CloudEvents version Ferry writes and reads.
pub const SPEC_VERSION: &str = "1.0";
/// The media type of a structured-mode CloudEvent.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The source a message gets when its publisher was given none.
pub const DEFAULT_SOURCE: &str = "/ferry";

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

    /// The JSON Schema (draft-07) of the payload, or `None` (the default). With a schema, a
    /// router validates each incoming payload against it before decoding (a payload that fails
    /// is dead-lettered with the validation errors), and AsyncAPI documents publish it. With
    /// `schemars`: `Some(ferry_toolkit::schema_of::<Self>())`.
    fn json_schema() -> Option<Value> {
        None
    }
}

/// The draft-07 JSON Schema of `T`, as [`Message::json_schema`] wants it: draft-07 because it is
/// the dialect AsyncAPI 3.0 schemas are written in.
pub fn schema_of<T: schemars::JsonSchema>() -> Value {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>();
    schema.to_value()
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
    /// Who sent it (CloudEvents `source`). `None` on a new envelope: the [`crate::Publisher`]
    /// that sends the message stamps its service's source.
    pub source: Option<String>,
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
            source: None,
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

    /// Writes the envelope into `headers` as a binary-mode CloudEvent, replacing any envelope
    /// headers already there (the legacy `ferry-*` ones too, so a re-sent message has one
    /// envelope).
    pub fn write_to(&self, headers: &mut Headers) {
        headers.retain(|name| !LEGACY_NAMES.contains(&name));
        headers.insert(header::SPEC_VERSION, SPEC_VERSION);
        headers.insert(header::MESSAGE_ID, self.message_id.to_string());
        match &self.source {
            Some(source) => headers.insert(header::SOURCE, source.clone()),
            None => headers.remove(header::SOURCE),
        }
        headers.insert(header::TYPE, self.type_name.clone());
        headers.insert(header::TIME, rfc3339(self.produced_at));
        headers.insert(header::CONTENT_TYPE, "application/json");
        headers.insert(header::VERSION, self.version.to_string());
        headers.insert(header::CORRELATION_ID, self.correlation_id.to_string());
        match self.causation_id {
            Some(id) => headers.insert(header::CAUSATION_ID, id.to_string()),
            None => headers.remove(header::CAUSATION_ID),
        }
        let trace = self.traceparent.to_string();
        headers.insert(header::CE_TRACEPARENT, trace.clone());
        headers.insert(header::TRACEPARENT, trace);
        match &self.reply_to {
            Some(topic) => headers.insert(header::REPLY_TO, topic.clone()),
            None => headers.remove(header::REPLY_TO),
        }
        match self.stream_version {
            Some(version) => headers.insert(header::STREAM_VERSION, version.to_string()),
            None => headers.remove(header::STREAM_VERSION),
        }
    }

    /// Reads an envelope from headers: a binary-mode CloudEvent, or the legacy `ferry-*`
    /// headers. The id and type are required. A message from a producer that sets only those
    /// is still accepted: the rest default (version 1, correlation id = message id, a new
    /// trace, produced now), but a header that is present and malformed is an error.
    pub fn read_from(headers: &Headers) -> Result<Envelope> {
        let legacy = headers.get(header::MESSAGE_ID).is_none()
            && headers.get(header::SPEC_VERSION).is_none()
            && (headers.get(legacy_header::MESSAGE_ID).is_some()
                || headers.get(legacy_header::TYPE).is_some());
        let attribute = |name: &'static str| optional(headers, name);
        if legacy {
            Self::read_attributes(Format::Legacy, |name| attribute(legacy_name(name)))
        } else {
            Self::read_attributes(Format::Binary, attribute)
        }
    }

    /// Builds an envelope from attribute values looked up by their binary-mode header name
    /// (`get` maps the name to wherever the format keeps it).
    fn read_attributes<'a>(
        format: Format,
        get: impl Fn(&'static str) -> Result<Option<&'a str>>,
    ) -> Result<Envelope> {
        if format != Format::Legacy
            && let Some(version) = get(header::SPEC_VERSION)?
            && version != SPEC_VERSION
        {
            return Err(bad(header::SPEC_VERSION, version));
        }
        let source = get(header::SOURCE)?.map(str::to_owned);
        let id_name = format.name(header::MESSAGE_ID);
        let id = get(header::MESSAGE_ID)?.ok_or(Error::MissingHeader(id_name))?;
        let message_id = match (Uuid::parse_str(id), format) {
            (Ok(uuid), _) => uuid,
            // Any string is a CloudEvents id; `source` + `id` is what is unique.
            (Err(_), Format::Binary | Format::Structured) if !id.is_empty() => {
                foreign_id(source.as_deref().unwrap_or_default(), id)
            }
            (Err(_), _) => return Err(bad(id_name, id)),
        };
        let type_name = get(header::TYPE)?
            .ok_or(Error::MissingHeader(format.name(header::TYPE)))?
            .to_owned();
        if type_name.is_empty() {
            return Err(bad(format.name(header::TYPE), &type_name));
        }
        let parsed = |name: &'static str| -> Result<Option<Uuid>> {
            get(name)?.map(|v| parse(format.name(name), v)).transpose()
        };
        let version = get(header::VERSION)?
            .map(|v| parse(format.name(header::VERSION), v))
            .transpose()?
            .unwrap_or(1);
        let correlation_id = parsed(header::CORRELATION_ID)?.unwrap_or(message_id);
        let causation_id = parsed(header::CAUSATION_ID)?;
        let trace_name = match format {
            Format::Legacy => header::TRACEPARENT,
            _ => header::CE_TRACEPARENT,
        };
        let traceparent = match get(header::CE_TRACEPARENT)? {
            Some(v) => Some(parse(trace_name, v)?),
            None => get(header::TRACEPARENT)?
                .map(|v| parse(header::TRACEPARENT, v))
                .transpose()?,
        }
        .unwrap_or_else(TraceParent::new_root);
        let produced_at = match get(header::TIME)? {
            None => SystemTime::now(),
            Some(v) if format == Format::Legacy => {
                let ms = parse::<u64>(legacy_header::PRODUCED_AT, v)?;
                UNIX_EPOCH + Duration::from_millis(ms)
            }
            Some(v) => parse_rfc3339(v).ok_or_else(|| bad(format.name(header::TIME), v))?,
        };
        let reply_to = get(header::REPLY_TO)?.map(str::to_owned);
        let stream_name = format.name(header::STREAM_VERSION);
        let stream_version = get(header::STREAM_VERSION)?
            .map(|v| match parse::<i64>(stream_name, v)? {
                version if version >= 1 => Ok(version),
                _ => Err(bad(stream_name, v)),
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
            source,
            stream_version,
        })
    }
}

/// Where a message's envelope was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `ce_*` headers.
    Binary,
    /// Attributes inside an `application/cloudevents+json` payload.
    Structured,
    /// `ferry-*` headers.
    Legacy,
}

impl Format {
    /// How an attribute (named by its binary-mode header) is spelled in this format, for errors.
    fn name(self, binary: &'static str) -> &'static str {
        match self {
            Format::Binary => binary,
            Format::Legacy => legacy_name(binary),
            Format::Structured => structured_name(binary),
        }
    }
}

const LEGACY_NAMES: [&str; 8] = [
    legacy_header::MESSAGE_ID,
    legacy_header::TYPE,
    legacy_header::VERSION,
    legacy_header::CORRELATION_ID,
    legacy_header::CAUSATION_ID,
    legacy_header::PRODUCED_AT,
    legacy_header::REPLY_TO,
    legacy_header::STREAM_VERSION,
];

/// The legacy header of a binary-mode attribute (itself where there is none, e.g. traceparent).
fn legacy_name(binary: &'static str) -> &'static str {
    match binary {
        header::MESSAGE_ID => legacy_header::MESSAGE_ID,
        header::TYPE => legacy_header::TYPE,
        header::VERSION => legacy_header::VERSION,
        header::CORRELATION_ID => legacy_header::CORRELATION_ID,
        header::CAUSATION_ID => legacy_header::CAUSATION_ID,
        header::TIME => legacy_header::PRODUCED_AT,
        header::REPLY_TO => legacy_header::REPLY_TO,
        header::STREAM_VERSION => legacy_header::STREAM_VERSION,
        other => other,
    }
}

/// The structured-mode attribute of a binary-mode header: the name without `ce_`.
fn structured_name(binary: &'static str) -> &'static str {
    binary.strip_prefix("ce_").unwrap_or(binary)
}

/// The UUID standing for a foreign CloudEvent's string id: v5 of `source` and `id`.
fn foreign_id(source: &str, id: &str) -> Uuid {
    Uuid::new_v5(&FOREIGN_ID_NAMESPACE, format!("{source}\n{id}").as_bytes())
}

/// Namespace of [`foreign_id`] and [`crate::plain`]'s offset-derived ids (random, fixed forever:
/// changing it would make redelivered messages look new).
pub(crate) const FOREIGN_ID_NAMESPACE: Uuid =
    Uuid::from_u128(0x6a3f_0c2e_8d1b_4f5a_9e07_21c4_b8d3_5e91);

fn rfc3339(at: SystemTime) -> String {
    let millis = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let at = OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(millis as i64);
    at.format(&Rfc3339).unwrap_or_default()
}

fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    Some(SystemTime::from(at))
}

fn bad(name: &'static str, value: &str) -> Error {
    Error::BadHeader {
        name,
        value: value.to_owned(),
    }
}

fn optional<'a>(headers: &'a Headers, name: &'static str) -> Result<Option<&'a str>> {
    match headers.get(name) {
        None => Ok(None),
        Some(bytes) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| bad(name, &String::from_utf8_lossy(bytes))),
    }
}

fn parse<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T> {
    value.parse().map_err(|_| bad(name, value))
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
    pub(super) struct Ping {
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
        check_read(&[(header::TYPE, "t")], Err("missing header ce_id"));
        check_read(&[(header::MESSAGE_ID, id)], Err("missing header ce_type"));
        check_read(
            &[(header::MESSAGE_ID, id), (header::TYPE, "")],
            Err("bad header ce_type: \"\""),
        );
        check_read(
            &[
                (header::SPEC_VERSION, "0.3"),
                (header::MESSAGE_ID, id),
                (header::TYPE, "t"),
            ],
            Err("bad header ce_specversion: \"0.3\""),
        );
        check_read(
            &[
                (header::MESSAGE_ID, id),
                (header::TYPE, "t"),
                (header::VERSION, "x"),
            ],
            Err("bad header ce_schemaversion: \"x\""),
        );
        check_read(
            &[
                (header::MESSAGE_ID, id),
                (header::TYPE, "t"),
                (header::CE_TRACEPARENT, "00-zz"),
            ],
            Err("bad header ce_traceparent: \"00-zz\""),
        );
        check_read(
            &[
                (header::MESSAGE_ID, id),
                (header::TYPE, "t"),
                (header::TIME, "yesterday"),
            ],
            Err("bad header ce_time: \"yesterday\""),
        );
        for bad in ["0", "-1", "x"] {
            check_read(
                &[
                    (header::MESSAGE_ID, id),
                    (header::TYPE, "t"),
                    (header::STREAM_VERSION, bad),
                ],
                Err(format!("bad header ce_streamversion: \"{bad}\"").as_str()),
            );
        }
        // The legacy headers, with their own names in errors.
        check_read(
            &[(legacy_header::MESSAGE_ID, id), (legacy_header::TYPE, "t")],
            Ok(()),
        );
        check_read(
            &[(legacy_header::TYPE, "t")],
            Err("missing header ferry-message-id"),
        );
        check_read(
            &[
                (legacy_header::MESSAGE_ID, "nope"),
                (legacy_header::TYPE, "t"),
            ],
            Err("bad header ferry-message-id: \"nope\""),
        );
        check_read(
            &[
                (legacy_header::MESSAGE_ID, id),
                (legacy_header::TYPE, "t"),
                (legacy_header::STREAM_VERSION, "0"),
            ],
            Err("bad header ferry-stream-version: \"0\""),
        );
    }

    #[test]
    fn the_wire_is_a_binary_mode_cloudevent() {
        let mut envelope = Envelope::new::<Ping>();
        envelope.produced_at = UNIX_EPOCH + Duration::from_millis(1_765_000_000_123);
        envelope.source = Some("/ferry/test".into());
        let mut headers = Headers::new();
        envelope.write_to(&mut headers);
        let names: Vec<_> = headers.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "ce_specversion",
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_time",
                "content-type",
                "ce_schemaversion",
                "ce_correlationid",
                "ce_traceparent",
                "traceparent",
            ]
        );
        assert_eq!(headers.get_str(header::SPEC_VERSION), Some("1.0"));
        assert_eq!(
            headers.get_str(header::TIME),
            Some("2025-12-06T05:46:40.123Z")
        );
        assert_eq!(headers.get_str(header::TYPE), Some("test.ping"));
        assert_eq!(headers.get_str(header::VERSION), Some("3"));
    }

    #[test]
    fn legacy_headers_read_the_same_envelope_and_rewriting_drops_them() {
        let envelope = Envelope::new::<Ping>();
        let millis = envelope
            .produced_at
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let mut headers: Headers = [
            (legacy_header::MESSAGE_ID, envelope.message_id.to_string()),
            (legacy_header::TYPE, envelope.type_name.clone()),
            (legacy_header::VERSION, "3".to_owned()),
            (
                legacy_header::CORRELATION_ID,
                envelope.correlation_id.to_string(),
            ),
            (header::TRACEPARENT, envelope.traceparent.to_string()),
            (legacy_header::PRODUCED_AT, millis.to_string()),
        ]
        .into_iter()
        .collect();
        let mut read = Envelope::read_from(&headers).unwrap();
        let read_millis = read
            .produced_at
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert_eq!(read_millis, millis);
        read.produced_at = envelope.produced_at;
        assert_eq!(read, envelope);
        read.write_to(&mut headers);
        assert!(headers.iter().all(|(n, _)| !n.starts_with("ferry-")));
    }

    #[test]
    fn headers_debug_shows_text_values() {
        let headers: Headers = [("a", "1")].into_iter().collect();
        assert_eq!(format!("{headers:?}"), r#"{"a": "1"}"#);
    }
}
