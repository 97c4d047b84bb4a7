//! Reading: whole batches below the high watermark (or, for `read_committed`, below the last
//! stable offset), timestamp lookups, and header listings for tools.

use std::ops::ControlFlow;
use std::sync::Arc;

use super::{DurablePoint, PartitionLog, ReadResult, View};
use crate::batch::{self, BATCH_HEADER_LEN, BatchHeader};
use crate::error::{Error, Result};
use crate::segment::Segment;

impl PartitionLog {
    /// Reads whole batches starting with the one containing `offset`, below the high watermark only.
    /// Stops before a batch that would take the result past `max_bytes`, except that with `min_one`
    /// the first batch is returned whatever its size. `offset` equal to the high watermark gives no
    /// records; outside `[log start, high watermark]` it is [`Error::OffsetOutOfRange`].
    pub fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<ReadResult> {
        self.read_isolated(offset, max_bytes, min_one, false)
    }

    /// Like [`read`](Self::read) for a `read_committed` consumer: stops before the last stable
    /// offset, and lists the aborted transactions that overlap the batches returned.
    pub fn read_committed(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadResult> {
        self.read_isolated(offset, max_bytes, min_one, true)
    }

    fn read_isolated(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        committed: bool,
    ) -> Result<ReadResult> {
        let (segments, durable, log_start) = self.snapshot_from(offset, |v| v.durable.end)?;
        let last_stable_offset = self.txns.read().last_stable_offset(durable.end);
        let mut result = ReadResult {
            records: Vec::new(),
            high_watermark: durable.end,
            log_start_offset: log_start,
            last_stable_offset,
            aborted_transactions: committed.then(Vec::new),
        };
        let end = if committed {
            last_stable_offset
        } else {
            durable.end
        };
        if offset >= end {
            return Ok(result);
        }
        let records = &mut result.records;
        for (k, segment) in segments.iter().enumerate() {
            let room = max_bytes.saturating_sub(records.len());
            let must_take_one = min_one && records.is_empty();
            if room < BATCH_HEADER_LEN && !must_take_one {
                break;
            }
            let limit = durable.readable_len(segment);
            if limit == 0 {
                if segment.base_offset() >= durable.segment_base {
                    break;
                }
                continue;
            }
            // Later segments are read from their start; the index finds the position in the first.
            let target = if k == 0 {
                offset
            } else {
                segment.base_offset()
            };
            let Some((start, first)) = segment.find_batch(target, limit)? else {
                continue;
            };
            let available = (limit - start) as usize;
            let mut want = available.min(room);
            if must_take_one {
                want = want.max(first.total_len());
            }
            if want < first.total_len() {
                break;
            }
            let old = records.len();
            segment.read_into(start, want, records)?;
            let whole = batch::whole_batches_len(&records[old..]);
            records.truncate(old + whole);
            if whole < available {
                break;
            }
        }
        if committed {
            let (len, next) = stable_prefix(&result.records, last_stable_offset);
            result.records.truncate(len);
            let aborted = self
                .txns
                .read()
                .aborted_between(offset, next.unwrap_or(offset));
            result.aborted_transactions = Some(aborted);
        }
        Ok(result)
    }

    /// Under the view lock: checks `offset` against `[log start, end(view)]` and returns the segments
    /// from the one containing `offset` onwards, the durable point and the log start.
    fn snapshot_from(
        &self,
        offset: i64,
        end: impl Fn(&View) -> i64,
    ) -> Result<(Vec<Arc<Segment>>, DurablePoint, i64)> {
        let view = self.view.read();
        let end = end(&view);
        if offset < view.log_start || offset > end {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                start: view.log_start,
                end,
            });
        }
        let index = view
            .segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        Ok((
            view.segments[index..].to_vec(),
            view.durable,
            view.log_start,
        ))
    }

    fn snapshot(&self) -> (Vec<Arc<Segment>>, DurablePoint) {
        let view = self.view.read();
        (view.segments.clone(), view.durable)
    }

    /// The first durable record whose timestamp is at least `timestamp`, as (its offset, its
    /// timestamp); `None` if there is none (ListOffsets by timestamp, as Kafka answers it).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        let (segments, durable) = self.snapshot();
        for segment in &segments {
            let limit = durable.readable_len(segment);
            if limit == 0
                || segment
                    .max_timestamp()
                    .is_none_or(|(max, _)| max < timestamp)
            {
                continue;
            }
            if let Some(found) = segment.find_timestamp(timestamp, limit)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The durable record with the largest timestamp, as (its offset, that timestamp); the
    /// earliest one on ties. `None` for an empty log (ListOffsets MAX_TIMESTAMP). Batch headers
    /// find the batch; only that one batch is decoded to find the record in it.
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>> {
        let (segments, durable) = self.snapshot();
        // (batch base offset, timestamp, index of its segment)
        let mut best: Option<(i64, i64, usize)> = None;
        for (k, segment) in segments.iter().enumerate() {
            let mut consider = |offset: i64, timestamp: i64| {
                if best.is_none_or(|(_, t, _)| timestamp > t) {
                    best = Some((offset, timestamp, k));
                }
            };
            let limit = durable.readable_len(segment);
            match segment.max_timestamp() {
                _ if limit == 0 => {}
                Some((timestamp, offset)) if offset < durable.end => consider(offset, timestamp),
                // The maximum is not durable yet: look at the durable part of the segment only.
                Some(_) => segment.scan_headers(0, limit, |_, h| {
                    consider(h.base_offset, h.max_timestamp);
                    ControlFlow::Continue(())
                })?,
                None => {}
            }
        }
        let Some((offset, timestamp, k)) = best else {
            return Ok(None);
        };
        let segment = &segments[k];
        segment
            .max_timestamp_record(offset, timestamp, durable.readable_len(segment))
            .map(Some)
    }

    /// Headers of every written batch from the one containing `offset` to the log end, for tools
    /// and tests. `offset` outside `[log start, log end]` is [`Error::OffsetOutOfRange`].
    pub fn batch_headers_from(&self, offset: i64) -> Result<Vec<BatchHeader>> {
        let (segments, _, _) = self.snapshot_from(offset, |v| v.log_end)?;
        let mut headers = Vec::new();
        for (k, segment) in segments.iter().enumerate() {
            let limit = segment.size();
            let start = if k == 0 {
                match segment.find_batch(offset, limit)? {
                    Some((pos, _)) => pos,
                    None => continue,
                }
            } else {
                0
            };
            segment.scan_headers(start, limit, |_, h| {
                headers.push(*h);
                ControlFlow::Continue(())
            })?;
        }
        Ok(headers)
    }
}

/// The length of the prefix of `records` (whole batches) whose batches start below `lso`, and the
/// offset after the last batch of that prefix (`None` if it is empty).
fn stable_prefix(records: &[u8], lso: i64) -> (usize, Option<i64>) {
    let mut pos = 0;
    let mut next = None;
    while let Ok(header) = BatchHeader::parse(&records[pos..]) {
        if header.base_offset >= lso || pos + header.total_len() > records.len() {
            break;
        }
        pos += header.total_len();
        next = Some(header.next_offset());
    }
    (pos, next)
}
