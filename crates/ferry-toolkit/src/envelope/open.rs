//! Opening a consumed message: finding its envelope wherever the producer put it (structured
//! mode, binary mode, the legacy headers, or nowhere, for [`PlainTyping`]) and the payload to
//! decode; and [`Summary`], the lenient view of an envelope that viewers show.

use std::borrow::Cow;
use std::time::UNIX_EPOCH;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use super::{
    Envelope, Format, Headers, STRUCTURED_CONTENT_TYPE, header, legacy_header, legacy_name,
    parse_rfc3339, structured_name,
};
use crate::error::{Error, Result};
use crate::plain::PlainTyping;
use crate::transport::IncomingMessage;

/// A message opened for a handler: its envelope and the payload to decode.
#[derive(Debug)]
pub struct Opened<'a> {
    /// The envelope, from wherever the message kept it.
    pub envelope: Envelope,
    /// The payload: the record's value, or a structured event's `data`, or what a
    /// [`PlainTyping`] unwrapped.
    pub payload: Cow<'a, [u8]>,
}

/// Opens a consumed message: finds its envelope (structured-mode CloudEvent, binary-mode
/// headers, legacy `ferry-*` headers, or none, in which case `plain` types it) and its payload.
pub fn open<'a>(message: &'a IncomingMessage, plain: Option<&PlainTyping>) -> Result<Opened<'a>> {
    let headers = &message.headers;
    if let Some(content_type) = headers.get_str(header::CONTENT_TYPE)
        && content_type
            .get(..STRUCTURED_CONTENT_TYPE.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(STRUCTURED_CONTENT_TYPE))
    {
        return open_structured(&message.payload);
    }
    let enveloped = [
        header::MESSAGE_ID,
        header::TYPE,
        header::SPEC_VERSION,
        legacy_header::MESSAGE_ID,
        legacy_header::TYPE,
    ]
    .iter()
    .any(|name| headers.get(name).is_some());
    match plain {
        Some(plain) if !enveloped => plain.open(message),
        _ => Ok(Opened {
            envelope: Envelope::read_from(headers)?,
            payload: Cow::Borrowed(&message.payload),
        }),
    }
}

/// A structured-mode event: attributes and `data` (or `data_base64`) in one JSON object.
fn open_structured(payload: &[u8]) -> Result<Opened<'static>> {
    let undecodable = |why: String| Error::Envelope(format!("structured CloudEvent: {why}"));
    let event: serde_json::Map<String, Value> =
        serde_json::from_slice(payload).map_err(|e| undecodable(e.to_string()))?;
    // Attributes are strings on the wire of the binary mode; here integers are allowed too.
    let texts: Vec<(&'static str, String)> = ATTRIBUTES
        .iter()
        .filter_map(|&binary| {
            let value = event.get(structured_name(binary))?;
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => other.to_string(),
            };
            Some((binary, text))
        })
        .collect();
    if !texts.iter().any(|(name, _)| *name == header::SPEC_VERSION) {
        return Err(Error::MissingHeader("specversion"));
    }
    let envelope = Envelope::read_attributes(Format::Structured, |name| {
        Ok(texts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str()))
    })?;
    let data = match (event.get("data"), event.get("data_base64")) {
        (Some(Value::String(text)), _)
            if !event
                .get("datacontenttype")
                .and_then(Value::as_str)
                .is_none_or(|t| t.contains("json")) =>
        {
            text.clone().into_bytes()
        }
        (Some(data), _) => serde_json::to_vec(data).map_err(|e| undecodable(e.to_string()))?,
        (None, Some(Value::String(b64))) => BASE64
            .decode(b64)
            .map_err(|e| undecodable(format!("data_base64: {e}")))?,
        (None, _) => b"null".to_vec(),
    };
    Ok(Opened {
        envelope,
        payload: Cow::Owned(data),
    })
}

/// Every attribute by its binary-mode name.
const ATTRIBUTES: [&str; 12] = [
    header::SPEC_VERSION,
    header::MESSAGE_ID,
    header::SOURCE,
    header::TYPE,
    header::TIME,
    header::VERSION,
    header::CORRELATION_ID,
    header::CAUSATION_ID,
    header::CE_TRACEPARENT,
    header::TRACEPARENT,
    header::REPLY_TO,
    header::STREAM_VERSION,
];

/// What a viewer (the dashboard, the AMQP properties) shows of an envelope, read leniently
/// from any header format: each field is `None` when absent or malformed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The message id as written.
    pub message_id: Option<String>,
    /// The type name.
    pub type_name: Option<String>,
    /// The correlation id.
    pub correlation_id: Option<String>,
    /// The causation id.
    pub causation_id: Option<String>,
    /// When it was produced, Unix epoch milliseconds.
    pub produced_at_millis: Option<u64>,
}

impl Summary {
    /// Reads the summary of `headers`.
    pub fn of(headers: &Headers) -> Summary {
        let text = |name: &'static str| {
            headers
                .get_str(name)
                .or_else(|| headers.get_str(legacy_name(name)))
                .map(str::to_owned)
        };
        let produced_at_millis = match headers.get_str(header::TIME) {
            Some(t) => parse_rfc3339(t)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64),
            None => headers
                .get_str(legacy_header::PRODUCED_AT)
                .and_then(|v| v.parse().ok()),
        };
        Summary {
            message_id: text(header::MESSAGE_ID),
            type_name: text(header::TYPE),
            correlation_id: text(header::CORRELATION_ID),
            causation_id: text(header::CAUSATION_ID),
            produced_at_millis,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::super::foreign_id;
    use super::super::tests::Ping;
    use super::*;

    fn structured(json: &str) -> IncomingMessage {
        IncomingMessage {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            headers: [(
                header::CONTENT_TYPE,
                "application/cloudevents+json; charset=utf-8",
            )]
            .into_iter()
            .collect(),
            payload: json.as_bytes().to_vec(),
        }
    }

    #[test]
    fn structured_mode_events_open_with_their_data() {
        let message = structured(
            r#"{"specversion":"1.0","id":"A234-1234-1234","source":"/mycontext","type":"com.example.someevent",
                "time":"2018-04-05T17:31:00+02:00","correlationid":"0190d8e2-7c53-7f00-8000-000000000001",
                "datacontenttype":"application/json","data":{"appinfoA":"abc"}}"#,
        );
        let opened = open(&message, None).unwrap();
        assert_eq!(opened.envelope.type_name, "com.example.someevent");
        assert_eq!(opened.envelope.source.as_deref(), Some("/mycontext"));
        // A string id becomes a stable UUID of source and id.
        assert_eq!(
            opened.envelope.message_id,
            foreign_id("/mycontext", "A234-1234-1234")
        );
        assert_eq!(
            opened.envelope.message_id,
            open(&message, None).unwrap().envelope.message_id
        );
        assert_eq!(
            opened.envelope.correlation_id.to_string(),
            "0190d8e2-7c53-7f00-8000-000000000001"
        );
        assert_eq!(
            opened.envelope.produced_at,
            UNIX_EPOCH + Duration::from_secs(1_522_942_260)
        );
        assert_eq!(&*opened.payload, br#"{"appinfoA":"abc"}"#);

        let binary = structured(
            r#"{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"/wA="}"#,
        );
        assert_eq!(&*open(&binary, None).unwrap().payload, &[0xff, 0x00]);
        let no_version = structured(r#"{"id":"1","source":"s","type":"t"}"#);
        assert_eq!(
            open(&no_version, None).unwrap_err().to_string(),
            "missing header specversion"
        );
        let no_type = structured(r#"{"specversion":"1.0","id":"1","source":"s"}"#);
        assert_eq!(
            open(&no_type, None).unwrap_err().to_string(),
            "missing header type"
        );
        assert!(open(&structured("[1,2]"), None).is_err());
    }

    #[test]
    fn a_message_without_any_envelope_needs_plain_typing() {
        let mut message = structured(r#"{"id":"1"}"#);
        message.headers = Headers::new();
        assert_eq!(
            open(&message, None).unwrap_err().to_string(),
            "missing header ce_id"
        );
        let opened = open(&message, Some(&PlainTyping::fixed("CourseMessage"))).unwrap();
        assert_eq!(opened.envelope.type_name, "CourseMessage");
        // An envelope, when there is one, wins over plain typing.
        let id = Uuid::now_v7().to_string();
        message.headers.insert(header::MESSAGE_ID, id.clone());
        message.headers.insert(header::TYPE, "other");
        let opened = open(&message, Some(&PlainTyping::fixed("CourseMessage"))).unwrap();
        assert_eq!(opened.envelope.type_name, "other");
        assert_eq!(opened.envelope.message_id.to_string(), id);
    }

    #[test]
    fn summary_reads_either_header_format() {
        let envelope = Envelope::new::<Ping>();
        let mut headers = Headers::new();
        envelope.write_to(&mut headers);
        let summary = Summary::of(&headers);
        assert_eq!(summary.type_name.as_deref(), Some("test.ping"));
        assert_eq!(summary.message_id, Some(envelope.message_id.to_string()));
        let legacy: Headers = [
            (legacy_header::TYPE, "x"),
            (legacy_header::PRODUCED_AT, "42"),
        ]
        .into_iter()
        .collect();
        let summary = Summary::of(&legacy);
        assert_eq!(summary.type_name.as_deref(), Some("x"));
        assert_eq!(summary.produced_at_millis, Some(42));
    }
}
