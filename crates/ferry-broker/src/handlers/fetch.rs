//! Fetch: read whole batches from each requested partition, long-polling until `min_bytes` are
//! there or `max_wait_ms` has passed.
//!
//! The wait is event-driven: the broker's `data_ready` signal fires whenever a high watermark
//! advances, and the fetch re-reads then. It never sleeps while data is available (one
//! Kafka-compatible broker sleeps on every pass, which makes librdkafka consume 10x slower).
//! Fetch sessions (KIP-227) are not kept: the response's session id 0 tells clients to send
//! full fetches, which every client supports. From v13 on a request names topics by id only
//! (KIP-516); an id the broker does not know is UNKNOWN_TOPIC_ID.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId};

use super::{Reply, error_code};
use crate::state::Shared;

/// `isolation_level` of a `read_committed` consumer.
pub const READ_COMMITTED: i8 = 1;

/// Cap on a client's max wait, so a bogus value cannot park a connection for ever.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

/// The first Fetch version that names topics by id instead of by name.
const TOPIC_IDS: i16 = 13;

pub fn handle(shared: Arc<Shared>, req: FetchRequest, version: i16) -> Reply {
    Box::pin(async move {
        let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
        let deadline = tokio::time::Instant::now() + wait;
        let min_bytes = req.min_bytes.max(0) as usize;
        loop {
            // Register interest before reading, so data that lands in between still wakes us.
            let notified = shared.data_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (response, bytes, had_error) = read_all(&shared, &req, version);
            if bytes >= min_bytes.max(1) || had_error || tokio::time::Instant::now() >= deadline {
                return Some(response.into());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                // Timed out with no new data since the read above (interest was registered
                // before it), so that read is current: answer with it.
                return Some(response.into());
            }
        }
    })
}

/// One pass over every requested partition. Returns the response, the record bytes in it, and
/// whether any partition carries an error (which Kafka answers at once).
fn read_all(shared: &Shared, req: &FetchRequest, version: i16) -> (FetchResponse, usize, bool) {
    let mut remaining = if req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut total = 0usize;
    let mut had_error = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    for ft in &req.topics {
        let by_id = version >= TOPIC_IDS;
        let topic = if by_id {
            shared.store.topic_by_id(ft.topic_id)
        } else {
            shared.store.topic(ft.topic.0.as_str())
        };
        let unknown = if by_id && topic.is_none() {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        let mut partitions = Vec::with_capacity(ft.partitions.len());
        for fp in &ft.partitions {
            let mut pd = PartitionData::default().with_partition_index(fp.partition);
            let log = topic.as_ref().and_then(|t| {
                u32::try_from(fp.partition)
                    .ok()
                    .and_then(|i| t.partition(i))
            });
            let Some(log) = log else {
                pd.error_code = unknown.code();
                had_error = true;
                partitions.push(pd);
                continue;
            };
            let limit = (fp.partition_max_bytes.max(0) as usize).min(remaining);
            // The first batch of the whole response is sent even if it exceeds the limits, so a
            // consumer can always make progress past a large batch.
            // read_committed stops at the last stable offset and names the aborted transactions
            // in what it returns, so the consumer can drop their records.
            let read = if req.isolation_level == READ_COMMITTED {
                log.read_committed(fp.fetch_offset, limit, total == 0)
            } else {
                log.read(fp.fetch_offset, limit, total == 0)
            };
            match read {
                Ok(read) => {
                    total += read.records.len();
                    remaining = remaining.saturating_sub(read.records.len());
                    pd.high_watermark = read.high_watermark;
                    pd.last_stable_offset = read.last_stable_offset;
                    pd.log_start_offset = read.log_start_offset;
                    pd.aborted_transactions = read.aborted_transactions.map(|list| {
                        list.into_iter()
                            .map(|a| {
                                AbortedTransaction::default()
                                    .with_producer_id(ProducerId(a.producer_id))
                                    .with_first_offset(a.first_offset)
                            })
                            .collect()
                    });
                    pd.records = Some(read.records.into());
                }
                Err(e) => {
                    pd.error_code = error_code(&e);
                    pd.high_watermark = log.high_watermark();
                    pd.last_stable_offset = log.last_stable_offset();
                    pd.log_start_offset = log.log_start_offset();
                    had_error = true;
                }
            }
            partitions.push(pd);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(ft.topic.clone())
                .with_topic_id(ft.topic_id)
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default().with_responses(topics),
        total,
        had_error,
    )
}
