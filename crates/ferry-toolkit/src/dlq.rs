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
//! back to its original topic with its original message id. On Kafka the topic is shared by
//! every group that reads it, so the other groups see the message again; handlers that
//! de-duplicate by message id (the inbox) apply it once.

use crate::envelope::Headers;
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

/// Builds the dead letter of `message`.
pub fn dead_letter(
    message: &IncomingMessage,
    reason: Reason,
    error: &str,
    attempts: u32,
    group: &str,
) -> OutgoingMessage {
    let mut headers = message.headers.clone();
    // A message re-driven and failing again gets fresh dead-letter headers, not a second set.
    headers.retain(|name| !name.starts_with(header::PREFIX));
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
/// `ferry-dlq-original-topic`, or the dead-letter topic's name without `.dlq`).
pub fn restore(dead_letter: &IncomingMessage) -> Option<OutgoingMessage> {
    let topic = match dead_letter.headers.get_str(header::ORIGINAL_TOPIC) {
        Some(topic) if !topic.is_empty() => topic.to_owned(),
        _ => dead_letter
            .topic
            .strip_suffix(SUFFIX)
            .filter(|t| !t.is_empty())?
            .to_owned(),
    };
    let mut headers: Headers = dead_letter.headers.clone();
    headers.retain(|name| !name.starts_with(header::PREFIX));
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
            headers: [("ferry-type", "order-placed"), ("x", "y")]
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
        assert_eq!(back.headers, original.headers);
        assert_eq!(back.key, original.key);

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
    }
}
