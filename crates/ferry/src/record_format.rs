//! How `ferry consume` prints a record: a kcat-style `--format` string, or one JSON object per
//! line (`--json`). Values and keys are bytes, never assumed to be text: `--format` writes them
//! as they are (so a binary value round-trips byte for byte), JSON shows UTF-8 as a string and
//! anything else as base64.
//!
//! Placeholders (kcat's): `%t` topic, `%p` partition, `%o` offset, `%T` timestamp (ms since the
//! epoch, -1 if none), `%k` key, `%K` key length (-1 for none), `%s` value, `%S` value length (-1
//! for none), `%h` headers as `name=value,...`, `%%` a percent sign; escapes `\n`, `\r`, `\t`,
//! `\0` and `\\`.

use std::io::{self, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rdkafka::message::{Headers, Message};
use serde_json::{Map, Value, json};

/// One part of a parsed `--format`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    KeyLength,
    Value,
    ValueLength,
    Headers,
}

/// A parsed `--format` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format(Vec<Part>);

impl Format {
    /// Parses a format; an unknown `%x` or `\x` is an error that names it.
    pub fn parse(spec: &str) -> Result<Format, String> {
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut chars = spec.chars();
        while let Some(c) = chars.next() {
            let part = match c {
                '%' => match chars.next() {
                    Some('t') => Part::Topic,
                    Some('p') => Part::Partition,
                    Some('o') => Part::Offset,
                    Some('T') => Part::Timestamp,
                    Some('k') => Part::Key,
                    Some('K') => Part::KeyLength,
                    Some('s') => Part::Value,
                    Some('S') => Part::ValueLength,
                    Some('h') => Part::Headers,
                    Some('%') => {
                        literal.push(b'%');
                        continue;
                    }
                    Some(other) => {
                        return Err(format!(
                            "unknown placeholder %{other} (known: %t %p %o %T %k %K %s %S %h %%)"
                        ));
                    }
                    None => return Err("the format ends in a lone %".into()),
                },
                '\\' => {
                    let byte = match chars.next() {
                        Some('n') => b'\n',
                        Some('r') => b'\r',
                        Some('t') => b'\t',
                        Some('0') => 0,
                        Some('\\') => b'\\',
                        Some(other) => {
                            return Err(format!(
                                "unknown escape \\{other} (known: \\n \\r \\t \\0 \\\\)"
                            ));
                        }
                        None => return Err("the format ends in a lone \\".into()),
                    };
                    literal.push(byte);
                    continue;
                }
                c => {
                    let mut buf = [0u8; 4];
                    literal.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    continue;
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Format(parts))
    }

    /// Writes `message` as the format says.
    pub fn write<M: Message>(&self, out: &mut impl Write, message: &M) -> io::Result<()> {
        let length = |b: Option<&[u8]>| b.map_or(-1, |b| b.len() as i64);
        for part in &self.0 {
            match part {
                Part::Literal(bytes) => out.write_all(bytes)?,
                Part::Topic => out.write_all(message.topic().as_bytes())?,
                Part::Partition => write!(out, "{}", message.partition())?,
                Part::Offset => write!(out, "{}", message.offset())?,
                Part::Timestamp => {
                    write!(out, "{}", message.timestamp().to_millis().unwrap_or(-1))?
                }
                Part::Key => out.write_all(message.key().unwrap_or_default())?,
                Part::KeyLength => write!(out, "{}", length(message.key()))?,
                Part::Value => out.write_all(message.payload().unwrap_or_default())?,
                Part::ValueLength => write!(out, "{}", length(message.payload()))?,
                Part::Headers => {
                    if let Some(headers) = message.headers() {
                        for (i, h) in headers.iter().enumerate() {
                            if i > 0 {
                                out.write_all(b",")?;
                            }
                            out.write_all(h.key.as_bytes())?;
                            out.write_all(b"=")?;
                            out.write_all(h.value.unwrap_or_default())?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Bytes as JSON: a string when they are UTF-8, else `{"base64": "..."}`; `null` when absent.
fn bytes_json(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => json!({ "base64": BASE64.encode(b) }),
        },
    }
}

/// One record as a JSON object (fields in name order): topic, partition, offset, timestamp, key,
/// headers (in their order, as `[name, value]` pairs, since Kafka allows repeats) and value.
pub fn to_json<M: Message>(message: &M) -> Value {
    let headers: Vec<Value> = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| json!([h.key, bytes_json(h.value)]))
                .collect()
        })
        .unwrap_or_default();
    let mut object = Map::new();
    object.insert("topic".into(), message.topic().into());
    object.insert("partition".into(), message.partition().into());
    object.insert("offset".into(), message.offset().into());
    object.insert(
        "timestamp".into(),
        message
            .timestamp()
            .to_millis()
            .map_or(Value::Null, Value::from),
    );
    object.insert("key".into(), bytes_json(message.key()));
    object.insert("headers".into(), Value::Array(headers));
    object.insert("value".into(), bytes_json(message.payload()));
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

    fn record(value: &[u8]) -> OwnedMessage {
        OwnedMessage::new(
            Some(value.to_vec()),
            Some(b"k1".to_vec()),
            "orders".into(),
            Timestamp::CreateTime(1_700_000_000_123),
            2,
            42,
            Some(
                OwnedHeaders::new()
                    .insert(Header {
                        key: "ce_type",
                        value: Some("OrderPlaced"),
                    })
                    .insert(Header {
                        key: "trace",
                        value: None::<&[u8]>,
                    }),
            ),
        )
    }

    fn render(spec: &str, message: &OwnedMessage) -> Vec<u8> {
        let mut out = Vec::new();
        Format::parse(spec)
            .unwrap()
            .write(&mut out, message)
            .unwrap();
        out
    }

    #[test]
    fn every_placeholder_renders() {
        let m = record(b"{\"total\":3}");
        let out = render(r"%t/%p@%o %T [%k:%K] %h %s (%S) 100%%\t|\n", &m);
        insta::assert_snapshot!(String::from_utf8(out).unwrap(), @r#"
        orders/2@42 1700000000123 [k1:2] ce_type=OrderPlaced,trace= {"total":3} (11) 100%	|
        "#);
    }

    #[test]
    fn binary_values_are_written_as_they_are() {
        let value: Vec<u8> = (0..=255).collect();
        assert_eq!(render("%s", &record(&value)), value);
    }

    #[test]
    fn unknown_placeholders_and_escapes_are_named() {
        assert_eq!(
            Format::parse("%x").unwrap_err(),
            "unknown placeholder %x (known: %t %p %o %T %k %K %s %S %h %%)"
        );
        assert!(Format::parse(r"\q").unwrap_err().contains(r"\q"));
        assert!(Format::parse("50%").is_err());
    }

    #[test]
    fn json_shows_text_as_strings_and_bytes_as_base64() {
        insta::assert_snapshot!(to_json(&record(b"plain")).to_string(), @r#"{"headers":[["ce_type","OrderPlaced"],["trace",null]],"key":"k1","offset":42,"partition":2,"timestamp":1700000000123,"topic":"orders","value":"plain"}"#);
        assert_eq!(
            to_json(&record(&[0xff, 0x00]))["value"],
            json!({ "base64": "/wA=" })
        );
    }
}
