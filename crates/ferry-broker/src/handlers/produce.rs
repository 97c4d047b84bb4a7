//! Produce: validate and append each partition's batches, then answer after the fsync
//! (acks=all and acks=1), or not at all (acks=0).
//!
//! Appends run synchronously while the request is dispatched, so batches from one connection
//! reach the log in the order they were sent. Durability is a separate step: every request's
//! partitions are flushed through [`ferry_log::PartitionLog::flush_to`], which is a group commit,
//! so concurrent producers share fsyncs. Consumers only see flushed data (the high watermark is
//! the durable end), so acks=1 waits for the flush too: in Kafka an acknowledged acks=1 record
//! of a single-replica partition is below the high watermark at once (ListOffsets LATEST and a
//! fetch include it), and answering before the flush would let a client's `seek_to_end` land
//! before its own acknowledged record. With one broker acks=1 and acks=all are thus the same
//! promise. acks=0 gets no answer; its flush runs in the background.

use std::sync::Arc;

use futures::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{Reply, error_code};
use crate::state::Shared;

/// A partition whose append must be fsynced before it is answered.
struct ToFlush {
    topic: usize,
    partition: usize,
    log: Arc<ferry_log::PartitionLog>,
    end_offset: i64,
}

pub fn handle(shared: &Arc<Shared>, req: ProduceRequest, _version: i16) -> Reply {
    let acks = req.acks;
    let mut responses = Vec::with_capacity(req.topic_data.len());
    let mut to_flush = Vec::new();
    for (ti, topic_data) in req.topic_data.into_iter().enumerate() {
        let name = topic_data.name.0.to_string();
        let topic = shared.topic_for_write(&name, true);
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for (pi, data) in topic_data.partition_data.into_iter().enumerate() {
            let mut resp = PartitionProduceResponse::default()
                .with_index(data.index)
                .with_base_offset(-1);
            let log = match &topic {
                _ if !matches!(acks, -1..=1) => Err(ResponseError::InvalidRequiredAcks.code()),
                // Internal topics are written by the broker only, as in Kafka.
                _ if crate::state::is_internal_topic(&name) => {
                    Err(ResponseError::InvalidTopicException.code())
                }
                Ok(Some(t)) => usize::try_from(data.index)
                    .ok()
                    .and_then(|i| t.partition(i as u32))
                    .ok_or(ResponseError::UnknownTopicOrPartition.code()),
                Ok(None) => Err(ResponseError::UnknownTopicOrPartition.code()),
                Err(e) => Err(error_code(e)),
            };
            let appended = log.and_then(|log| {
                let records = data.records.as_deref().unwrap_or_default();
                // Compacted topics refuse records without a key (Kafka's INVALID_RECORD).
                if let Ok(Some(t)) = &topic
                    && let Some((errors, message)) =
                        super::compacted::keyless_rejection(t, records)
                {
                    resp.record_errors = errors;
                    resp.error_message = Some(message);
                    return Err(ResponseError::InvalidRecord.code());
                }
                verify_transactional(shared, records, &name, data.index)?;
                match log.append(records) {
                    Ok(info) => Ok((log, info)),
                    Err(e) => {
                        tracing::debug!(topic = %name, partition = data.index, error = %e, "produce rejected");
                        Err(error_code(&e))
                    }
                }
            });
            match appended {
                Ok((log, info)) => {
                    resp.base_offset = info.base_offset;
                    resp.log_start_offset = info.log_start_offset;
                    to_flush.push(ToFlush {
                        topic: ti,
                        partition: pi,
                        log,
                        end_offset: info.end_offset,
                    });
                }
                Err(code) => resp.error_code = code,
            }
            partitions.push(resp);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_partition_responses(partitions),
        );
    }
    let mut response = ProduceResponse::default().with_responses(responses);

    if acks == 0 {
        // Make the data visible to consumers soon; the producer does not wait for it.
        tokio::spawn(flush_all(to_flush));
        return Box::pin(async { None });
    }
    Box::pin(async move {
        for (flushed, failed) in flush_all(to_flush).await {
            if let Some(e) = failed {
                tracing::error!(error = %e, "fsync failed; answering KAFKA_STORAGE_ERROR");
                let p =
                    &mut response.responses[flushed.topic].partition_responses[flushed.partition];
                p.error_code = ResponseError::KafkaStorageError.code();
                p.base_offset = -1;
            }
        }
        Some(response.into())
    })
}

/// A transactional batch may be appended only by the current producer of an open transaction
/// that added this partition (KIP-890's verification, in process: the coordinator is local). A
/// fenced producer gets INVALID_PRODUCER_EPOCH, an unadded partition INVALID_TXN_STATE, as in
/// Kafka; without this a late batch could open a transaction nobody will ever end, and hold back
/// the last stable offset for good.
fn verify_transactional(
    shared: &Shared,
    records: &[u8],
    topic: &str,
    partition: i32,
) -> Result<(), i16> {
    let Ok(header) = ferry_log::BatchHeader::parse(records) else {
        return Ok(()); // malformed: the append refuses it with the right code
    };
    if !header.is_transactional() {
        return Ok(());
    }
    shared
        .txns
        .verify_produce(
            header.producer_id,
            header.producer_epoch,
            &(topic.to_owned(), partition),
        )
        .map_err(|e| {
            tracing::debug!(topic, partition, producer_id = header.producer_id, error = %e, "transactional produce refused");
            let code = match e {
                crate::txn::TxnError::ProducerFenced => ResponseError::InvalidProducerEpoch,
                crate::txn::TxnError::InvalidProducerIdMapping => {
                    ResponseError::InvalidProducerIdMapping
                }
                _ => ResponseError::InvalidTxnState,
            };
            code.code()
        })
}

/// Flush every partition concurrently; each result pairs the partition with its error, if any.
async fn flush_all(to_flush: Vec<ToFlush>) -> Vec<(ToFlush, Option<String>)> {
    join_all(to_flush.into_iter().map(|f| async move {
        let log = f.log.clone();
        let end = f.end_offset;
        let result = tokio::task::spawn_blocking(move || log.flush_to(end)).await;
        let failed = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(join) => Some(join.to_string()),
        };
        (f, failed)
    }))
    .await
}
