//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local (-4, v8+),
//! latest tiered (-5, v9+), or the first offset at or after a timestamp. A `read_committed` client (v2+) sees the last stable offset as the latest, and no
//! offset at or past it, as in Kafka.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::error_code;
use crate::state::Shared;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// KIP-405's earliest offset on local disk: without tiered storage, the log start offset.
const EARLIEST_LOCAL: i64 = -4;
/// KIP-1005's highest offset in tiered storage: without tiered storage Kafka answers offset -1
/// with leader epoch -1.
const LATEST_TIERED: i64 = -5;

pub fn handle(shared: &Arc<Shared>, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let committed = req.isolation_level == super::fetch::READ_COMMITTED;
    // The leader epoch exists from v4 on; the codec refuses to encode it for older versions.
    let leader_epoch = if version >= 4 { 0 } else { -1 };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = shared.store.topic(t.name.0.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let resp = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let log = topic.as_ref().and_then(|t| {
                        u32::try_from(p.partition_index)
                            .ok()
                            .and_then(|i| t.partition(i))
                    });
                    let Some(log) = log else {
                        return resp.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let fetchable = if committed {
                        log.last_stable_offset()
                    } else {
                        log.high_watermark()
                    };
                    if p.timestamp == LATEST_TIERED {
                        return resp.with_offset(-1).with_timestamp(-1);
                    }
                    let found = match p.timestamp {
                        LATEST => Ok(Some((fetchable, -1))),
                        EARLIEST | EARLIEST_LOCAL => Ok(Some((log.log_start_offset(), -1))),
                        MAX_TIMESTAMP => log.max_timestamp(),
                        ts => log.offset_for_timestamp(ts),
                    }
                    .map(|found| {
                        found.filter(|&(offset, _)| {
                            matches!(p.timestamp, LATEST | EARLIEST | EARLIEST_LOCAL)
                                || offset < fetchable
                        })
                    });
                    match found {
                        Ok(Some((offset, timestamp))) => resp
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(leader_epoch),
                        // No record at or after that time: Kafka answers offset -1.
                        Ok(None) => resp.with_offset(-1).with_timestamp(-1),
                        Err(e) => resp.with_error_code(error_code(&e)),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
