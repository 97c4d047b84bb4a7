//! Produce to a compacted topic: a record without a key has no place in a log that keeps the
//! latest record per key, so Kafka refuses the partition's whole payload with INVALID_RECORD and
//! names each keyless record in `record_errors` (Produce v8+). We answer the same way.

use ferry_log::Topic;
use kafka_protocol::messages::produce_response::BatchIndexAndErrorMessage;
use kafka_protocol::protocol::StrBytes;

/// Kafka lists at most this many record errors in the summary message.
const SHOWN: usize = 3;

/// For a compacted topic and a payload holding keyless records: the per-record errors and the
/// summary message of the rejection. `None` when the payload may go on to the append (which
/// also rejects malformed payloads, with their own error code).
pub(super) fn keyless_rejection(
    topic: &Topic,
    records: &[u8],
) -> Option<(Vec<BatchIndexAndErrorMessage>, StrBytes)> {
    if !topic.config().compacts() || ferry_log::validate_batches(records).is_err() {
        return None;
    }
    let keyless = ferry_log::keyless_records(records).ok()?;
    if keyless.is_empty() {
        return None;
    }
    let reason = format!(
        "Compacted topic cannot accept message without key in topic partition {}.",
        topic.name()
    );
    let errors: Vec<_> = keyless
        .iter()
        .map(|&index| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(index)
                .with_batch_index_error_message(Some(StrBytes::from_string(reason.clone())))
        })
        .collect();
    let shown: Vec<String> = keyless
        .iter()
        .take(SHOWN)
        .map(|i| format!("{{batch_index={i}, message={reason}}}"))
        .collect();
    let message = format!(
        "One or more records have been rejected due to {} record errors in total, and only \
         showing the first {} errors at most: [{}]",
        keyless.len(),
        shown.len(),
        shown.join(", ")
    );
    Some((errors, StrBytes::from_string(message)))
}
