//! Plain messages: records with no envelope at all, as a Python, Node or Java service, Kafka
//! Connect or Debezium produces them.
//!
//! A router is told per topic how to type them ([`crate::Router::plain`]): one type for every
//! message of the topic, the value of a JSON field, or a wrapper object that names the type and
//! carries the event inside. Such a message has no id, so it gets one derived from where it sits
//! (a UUID v5 of topic, partition and offset): a redelivery of the same record has the same id
//! and the inbox still applies it once. It starts a new flow (its correlation id is its id) and
//! a new trace.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;
use uuid::Uuid;

use crate::envelope::{DEFAULT_SOURCE, Envelope, FOREIGN_ID_NAMESPACE, Opened};
use crate::error::{Error, Result};
use crate::traceparent::TraceParent;
use crate::transport::IncomingMessage;

/// What a [`PlainTyping`] makes of a payload: the type to dispatch on, and the payload to
/// decode (`None`: the record's value as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typed {
    /// The type name handlers are registered under.
    pub type_name: String,
    /// A replacement payload (an unwrapped event), or `None` for the record's value.
    pub payload: Option<Vec<u8>>,
}

type Resolve = dyn Fn(&[u8]) -> std::result::Result<Typed, String> + Send + Sync;

/// How to type the messages of one topic that carry no envelope. Cheap to clone.
#[derive(Clone)]
pub struct PlainTyping {
    describe: Arc<str>,
    resolve: Arc<Resolve>,
}

impl fmt::Debug for PlainTyping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PlainTyping").field(&self.describe).finish()
    }
}

impl PlainTyping {
    /// Every plain message of the topic is of type `type_name` (the course producer's JSON on
    /// `test` is a `CourseMessage`).
    pub fn fixed(type_name: impl Into<String>) -> PlainTyping {
        let type_name = type_name.into();
        PlainTyping {
            describe: format!("type {type_name}").into(),
            resolve: Arc::new(move |_| {
                Ok(Typed {
                    type_name: type_name.clone(),
                    payload: None,
                })
            }),
        }
    }

    /// The type is the text of the payload's top-level JSON field `field` (e.g. `type`).
    pub fn field(field: impl Into<String>) -> PlainTyping {
        let field = field.into();
        PlainTyping {
            describe: format!("type in field {field:?}").into(),
            resolve: Arc::new(move |payload| {
                let object = json_object(payload)?;
                Ok(Typed {
                    type_name: text_field(&object, &field)?,
                    payload: None,
                })
            }),
        }
    }

    /// A wrapper object: the type is the text of `type_field`, the event is `data_field`,
    /// either a JSON value or a string holding JSON (the order/customer services'
    /// `{"Name": "OrderCreated", "EventData": "{...}"}`).
    pub fn wrapped(type_field: impl Into<String>, data_field: impl Into<String>) -> PlainTyping {
        let (type_field, data_field) = (type_field.into(), data_field.into());
        PlainTyping {
            describe: format!("type in {type_field:?}, event in {data_field:?}").into(),
            resolve: Arc::new(move |payload| {
                let object = json_object(payload)?;
                let type_name = text_field(&object, &type_field)?;
                let data = match object.get(&data_field) {
                    Some(Value::String(json)) => json.clone().into_bytes(),
                    Some(value) => value.to_string().into_bytes(),
                    None => return Err(format!("no field {data_field:?}")),
                };
                Ok(Typed {
                    type_name,
                    payload: Some(data),
                })
            }),
        }
    }

    /// Any other rule: `resolve` gets the payload and returns its type (and maybe a new
    /// payload), or why it cannot.
    pub fn custom(
        describe: impl Into<String>,
        resolve: impl Fn(&[u8]) -> std::result::Result<Typed, String> + Send + Sync + 'static,
    ) -> PlainTyping {
        PlainTyping {
            describe: describe.into().into(),
            resolve: Arc::new(resolve),
        }
    }

    /// Opens a plain message: its type, its payload and an envelope whose id is derived from
    /// the record's position.
    pub(crate) fn open<'a>(&self, message: &'a IncomingMessage) -> Result<Opened<'a>> {
        let typed = (self.resolve)(&message.payload).map_err(|why| {
            Error::Envelope(format!(
                "plain message on {} ({}): {why}",
                message.topic, self.describe
            ))
        })?;
        if typed.type_name.is_empty() {
            return Err(Error::Envelope(format!(
                "plain message on {}: empty type",
                message.topic
            )));
        }
        let message_id = position_id(&message.topic, message.partition, message.offset);
        let envelope = Envelope {
            message_id,
            type_name: typed.type_name,
            version: 1,
            correlation_id: message_id,
            causation_id: None,
            traceparent: TraceParent::new_root(),
            produced_at: SystemTime::now(),
            reply_to: None,
            source: Some(format!("{DEFAULT_SOURCE}/plain/{}", message.topic)),
            stream_version: None,
        };
        Ok(Opened {
            envelope,
            payload: match typed.payload {
                Some(payload) => Cow::Owned(payload),
                None => Cow::Borrowed(&message.payload),
            },
        })
    }
}

/// The id of the record at `topic`/`partition`/`offset`: the same for every delivery of it.
pub fn position_id(topic: &str, partition: i32, offset: i64) -> Uuid {
    Uuid::new_v5(
        &FOREIGN_ID_NAMESPACE,
        format!("kafka:{topic}/{partition}/{offset}").as_bytes(),
    )
}

fn json_object(payload: &[u8]) -> std::result::Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_slice(payload) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err("the payload is not a JSON object".to_owned()),
        Err(e) => Err(format!("the payload is not JSON: {e}")),
    }
}

fn text_field(
    object: &serde_json::Map<String, Value>,
    field: &str,
) -> std::result::Result<String, String> {
    match object.get(field) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(format!("field {field:?} is not a string")),
        None => Err(format!("no field {field:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Headers;

    fn record(topic: &str, offset: i64, payload: &str) -> IncomingMessage {
        IncomingMessage {
            topic: topic.into(),
            partition: 2,
            offset,
            key: None,
            headers: Headers::new(),
            payload: payload.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_same_record_gets_the_same_id_and_another_record_another() {
        let typing = PlainTyping::fixed("CourseMessage");
        let first = record("test", 7, "{}");
        let a = typing.open(&first).unwrap();
        let b = typing.open(&first).unwrap();
        let next = record("test", 8, "{}");
        let c = typing.open(&next).unwrap();
        assert_eq!(a.envelope.message_id, b.envelope.message_id);
        assert_ne!(a.envelope.message_id, c.envelope.message_id);
        assert_eq!(a.envelope.type_name, "CourseMessage");
        assert_eq!(a.envelope.correlation_id, a.envelope.message_id);
        assert_eq!(&*a.payload, b"{}");
    }

    #[test]
    fn wrapped_events_are_unwrapped_from_a_json_string_or_value() {
        let typing = PlainTyping::wrapped("Name", "EventData");
        let string = record("t", 0, r#"{"Name":"OrderCreated","EventData":"{\"a\":1}"}"#);
        let opened = typing.open(&string).unwrap();
        assert_eq!(opened.envelope.type_name, "OrderCreated");
        assert_eq!(&*opened.payload, br#"{"a":1}"#);
        let value = record("t", 1, r#"{"Name":"OrderCreated","EventData":{"a":1}}"#);
        assert_eq!(&*typing.open(&value).unwrap().payload, br#"{"a":1}"#);
        let missing = typing.open(&record("t", 2, r#"{"Name":"X"}"#)).unwrap_err();
        assert_eq!(
            missing.to_string(),
            r#"bad envelope: plain message on t (type in "Name", event in "EventData"): no field "EventData""#
        );
    }

    #[test]
    fn field_typing_reads_the_named_field() {
        let typing = PlainTyping::field("type");
        let typed = record("t", 0, r#"{"type":"a.b","x":1}"#);
        let opened = typing.open(&typed).unwrap();
        assert_eq!(opened.envelope.type_name, "a.b");
        assert!(typing.open(&record("t", 0, "not json")).is_err());
        assert!(typing.open(&record("t", 0, r#"{"type":3}"#)).is_err());
    }
}
