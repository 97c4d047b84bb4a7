//! Dead letters: the shape of a message parked in `<topic>.dlq`, and how it is restored.
//!
//! A dead letter is the original record (same key, payload and headers, envelope included)
//! with `ferry-dlq-*` headers added:
//!
//! | header | value |
//! | --- | --- |
//! | `ferry-dlq-reason` | `handler-failed` (attempts exhausted or a permanent error) or `undecodable` (bad envelope or payload) |
//! | `ferry-dlq-error` | the last error, as text |
//! | `ferry-dlq-attempts` | handler attempts made, decimal (0 for an undecodable message) |
//! | `ferry-dlq-original-topic` | where it was read from |
//! | `ferry-dlq-original-partition` | its partition, decimal |
//! | `ferry-dlq-original-offset` | its offset, decimal |
//! | `ferry-dlq-group` | the consumer group that gave up on it |
//!
//! Re-driving ([`restore`], `crate::kafka::redrive`) strips those headers and sends the record
//! back to its original topic with its original message id, **addressed to the group that gave
//! up on it**: the `ferry-redrive-group` header names that group. On Kafka a topic is read by
//! every group that subscribes to it, and each group dead-letters a poison message once, so
//! without the address a re-drive of N letters made every group see N copies, fail them again
//! and write up to N × groups new letters (3 → 8 → 17 → 34 in the wild). A router whose group is
//! not the one named acknowledges the message and skips it (`crate::process`); the named group
//! handles it as it would the original. So a re-drive never multiplies letters, and a group that
//! already handled the message does not apply it again. A letter without `ferry-dlq-group`
//! (written by hand or by another tool) is re-driven unaddressed, to every group.
//!
//! On AMQP a queue's routers are competing consumers (`crate::amqp::FEATURES`): a message is
//! delivered to one of them whatever its group, so the address is not applied there (skipping it
//! would drop it).

use crate::envelope::Headers;
use crate::error::{Error, Result};
use crate::transport::{IncomingMessage, OutgoingMessage};

/// The dead-letter header names.
pub mod header {
    /// Why the message was dead-lettered.
    pub const REASON: &str = "ferry-dlq-reason";
    /// The last error.
    pub const ERROR: &str = "ferry-dlq-error";
    /// Handler attempts made.
    pub const ATTEMPTS: &str = "ferry-dlq-attempts";
    /// The topic it was read from.
    pub const ORIGINAL_TOPIC: &str = "ferry-dlq-original-topic";
    /// Its partition.
    pub const ORIGINAL_PARTITION: &str = "ferry-dlq-original-partition";
    /// Its offset.
    pub const ORIGINAL_OFFSET: &str = "ferry-dlq-original-offset";
    /// The consumer group that gave up on it.
    pub const GROUP: &str = "ferry-dlq-group";
    /// The prefix shared by all of them.
    pub const PREFIX: &str = "ferry-dlq-";
    /// On a re-driven message (not a dead letter): the one consumer group that is to handle it.
    pub const REDRIVE_GROUP: &str = "ferry-redrive-group";
}

/// Suffix of dead-letter topics.
pub const SUFFIX: &str = ".dlq";

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The handler failed on every attempt, or failed permanently.
    HandlerFailed,
    /// The envelope or the payload could not be decoded; no handler ran.
    Undecodable,
}

impl Reason {
    /// The header value (and metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HandlerFailed => "handler-failed",
            Reason::Undecodable => "undecodable",
        }
    }
}

/// The dead-letter topic of `topic`.
pub fn topic_for(topic: &str) -> String {
    format!("{topic}{SUFFIX}")
}

/// The longest topic name Kafka accepts.
const MAX_TOPIC_NAME: usize = 249;

/// Checks that `dlq_topic` is a dead-letter topic's name and returns its original topic: a
/// legal Kafka topic name (1 to 249 of `a-z A-Z 0-9 . _ -`, not `.` or `..`) that ends in `.dlq`
/// after a non-empty name. [`Error::InvalidTopic`] otherwise.
pub fn original_topic(dlq_topic: &str) -> Result<&str> {
    let invalid = |reason: String| Error::InvalidTopic {
        topic: dlq_topic.chars().take(MAX_TOPIC_NAME + 1).collect(),
        reason,
    };
    if dlq_topic.is_empty() || dlq_topic.len() > MAX_TOPIC_NAME {
        return Err(invalid(format!(
            "a topic name has 1 to {MAX_TOPIC_NAME} characters"
        )));
    }
    if let Some(c) = dlq_topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(format!(
            "{c:?} is not allowed in a topic name (only a-z, A-Z, 0-9, '.', '_' and '-')"
        )));
    }
    match dlq_topic.strip_suffix(SUFFIX) {
        Some(original) if !original.is_empty() && original != "." && original != ".." => {
            Ok(original)
        }
        _ => Err(invalid(format!(
            "not a dead-letter topic (they are named <topic>{SUFFIX})"
        ))),
    }
}

/// Builds the dead letter of `message`.
pub fn dead_letter(
    message: &IncomingMessage,
    reason: Reason,
    error: &str,
    attempts: u32,
    group: &str,
) -> OutgoingMessage {
    let mut headers = message.headers.clone();
    // A message re-driven and failing again gets fresh dead-letter headers, not a second set,
    // and loses its re-drive address (the new letter names the group in `ferry-dlq-group`).
    headers.retain(|name| !name.starts_with(header::PREFIX) && name != header::REDRIVE_GROUP);
    headers.append(header::REASON, reason.as_str());
    headers.append(header::ERROR, error);
    headers.append(header::ATTEMPTS, attempts.to_string());
    headers.append(header::ORIGINAL_TOPIC, message.topic.clone());
    headers.append(header::ORIGINAL_PARTITION, message.partition.to_string());
    headers.append(header::ORIGINAL_OFFSET, message.offset.to_string());
    headers.append(header::GROUP, group);
    OutgoingMessage {
        topic: topic_for(&message.topic),
        key: message.key.clone(),
        headers,
        payload: message.payload.clone(),
    }
}

/// Turns a dead letter back into the original record, addressed to its original topic (from
/// `ferry-dlq-original-topic`, or the dead-letter topic's name without `.dlq`) and to the group
/// named in `ferry-dlq-group` (as `ferry-redrive-group`; see the module docs).
pub fn restore(dead_letter: &IncomingMessage) -> Option<OutgoingMessage> {
    let topic = match dead_letter.headers.get_str(header::ORIGINAL_TOPIC) {
        Some(topic) if !topic.is_empty() => topic.to_owned(),
        _ => dead_letter
            .topic
            .strip_suffix(SUFFIX)
            .filter(|t| !t.is_empty())?
            .to_owned(),
    };
    let group = dead_letter
        .headers
        .get_str(header::GROUP)
        .filter(|g| !g.is_empty())
        .map(str::to_owned);
    let mut headers: Headers = dead_letter.headers.clone();
    headers.retain(|name| !name.starts_with(header::PREFIX) && name != header::REDRIVE_GROUP);
    if let Some(group) = group {
        headers.append(header::REDRIVE_GROUP, group);
    }
    Some(OutgoingMessage {
        topic,
        key: dead_letter.key.clone(),
        headers,
        payload: dead_letter.payload.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_keeps_the_record_and_restore_undoes_it() {
        let original = IncomingMessage {
            topic: "orders".into(),
            partition: 2,
            offset: 41,
            key: Some(b"order-1".to_vec()),
            headers: [("ce_type", "order-placed"), ("x", "y")]
                .into_iter()
                .collect(),
            payload: b"{}".to_vec(),
        };
        let dl = dead_letter(&original, Reason::HandlerFailed, "boom", 5, "billing");
        assert_eq!(dl.topic, "orders.dlq");
        assert_eq!(dl.key, original.key);
        assert_eq!(dl.payload, original.payload);
        assert_eq!(dl.headers.get_str(header::ERROR), Some("boom"));
        assert_eq!(dl.headers.get_str(header::ATTEMPTS), Some("5"));
        assert_eq!(dl.headers.get_str(header::ORIGINAL_PARTITION), Some("2"));
        assert_eq!(dl.headers.get_str(header::ORIGINAL_OFFSET), Some("41"));
        assert_eq!(dl.headers.get_str(header::REASON), Some("handler-failed"));

        let parked = IncomingMessage {
            topic: dl.topic.clone(),
            partition: 0,
            offset: 0,
            key: dl.key,
            headers: dl.headers,
            payload: dl.payload,
        };
        let back = restore(&parked).unwrap();
        assert_eq!(back.topic, "orders");
        assert_eq!(back.key, original.key);
        // The original headers, then the address of the group that gave up on it.
        let mut addressed = original.headers.clone();
        addressed.append(header::REDRIVE_GROUP, "billing");
        assert_eq!(back.headers, addressed);

        // Failing again after the re-drive: a fresh letter, without the old address.
        let redriven = IncomingMessage {
            topic: back.topic.clone(),
            partition: 1,
            offset: 7,
            key: back.key.clone(),
            headers: back.headers.clone(),
            payload: back.payload.clone(),
        };
        let second = dead_letter(&redriven, Reason::HandlerFailed, "still", 1, "billing");
        assert_eq!(second.headers.get(header::REDRIVE_GROUP), None);
        assert_eq!(second.headers.get_str(header::GROUP), Some("billing"));

        // Failing again replaces the dead-letter headers instead of stacking them.
        let again = dead_letter(&parked, Reason::Undecodable, "bad", 0, "billing");
        assert_eq!(
            again
                .headers
                .iter()
                .filter(|(n, _)| *n == header::ERROR)
                .count(),
            1
        );
        assert_eq!(again.topic, "orders.dlq.dlq");
    }

    #[test]
    fn restore_falls_back_to_the_topic_name() {
        let m = |topic: &str| IncomingMessage {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            key: None,
            headers: Headers::new(),
            payload: vec![],
        };
        assert_eq!(restore(&m("a.dlq")).unwrap().topic, "a");
        assert!(restore(&m(".dlq")).is_none());
        assert!(restore(&m("plain")).is_none());
        // No group named: re-driven to every group, as before.
        assert_eq!(
            restore(&m("a.dlq"))
                .unwrap()
                .headers
                .get(header::REDRIVE_GROUP),
            None
        );
    }

    #[track_caller]
    fn check_name(name: &str, expected: Option<&str>) {
        match (original_topic(name), expected) {
            (Ok(original), Some(expected)) => assert_eq!(original, expected, "{name:?}"),
            (Err(Error::InvalidTopic { .. }), None) => {}
            (got, _) => panic!("{name:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn dead_letter_topic_names_are_checked() {
        check_name("test.dlq", Some("test"));
        check_name("ReactiveMicroservices.dlq", Some("ReactiveMicroservices"));
        check_name("a.dlq.dlq", Some("a.dlq"));
        check_name("my_topic-1.dlq", Some("my_topic-1"));
        check_name("test", None);
        check_name(".dlq", None);
        check_name("..dlq", None);
        check_name("...dlq", None);
        check_name("", None);
        check_name("bad name.dlq", None);
        check_name("a/b.dlq", None);
        check_name("caf\u{e9}.dlq", None);
        check_name(&format!("{}.dlq", "x".repeat(245)), Some(&"x".repeat(245)));
        check_name(&format!("{}.dlq", "x".repeat(246)), None);
    }
}
