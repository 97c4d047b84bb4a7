//! Records inside a magic-2 batch: the one place in ferry-log that looks past the batch header.
//!
//! The hot path (append, fetch) never decodes records. The cleaner must (it keeps the latest record
//! per key), and so must the produce check that rejects keyless records on a compacted topic.
//!
//! A batch's record section is `recordCount` records back to back, compressed as a whole by the
//! codec in attribute bits 0-2. One record is:
//!
//! ```text
//! length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
//! keyLength varint | key | valueLength varint | value | headerCount varint | headers
//! ```
//!
//! (varints are zigzag-encoded, a length of -1 is null). We parse records by hand rather than with
//! `kafka_protocol::records`: its decoder folds headers into a map (losing repeated header keys) and
//! its encoder recomputes the base offset, last offset delta and base sequence from the records it
//! is given, where a cleaned batch must keep the original batch's base offset, last offset delta,
//! producer id, epoch and base sequence (as Kafka's cleaner does). Records we keep are copied
//! byte for byte; only a new delete horizon makes us rewrite a record's timestamp delta.
//!
//! Compression uses the codec crates Kafka clients use: `flate2` (gzip), `snap` (snappy, raw or in
//! the xerial framing the Java client writes), `lz4_flex` (LZ4 frames, pure Rust) and `zstd`.

use std::io::{Read, Write};

use crate::batch::{BATCH_HEADER_LEN, BatchHeader, LOG_OVERHEAD};
use crate::error::{Error, Result};

/// Attribute bit 3: timestamps are the broker's log-append time (then `maxTimestamp` is that time).
const LOG_APPEND_TIME_FLAG: i16 = 1 << 3;
/// Attribute bit 6 (KIP-534): `baseTimestamp` holds the delete horizon set by a previous clean.
pub(crate) const DELETE_HORIZON_FLAG: i16 = 1 << 6;
/// Decompressed record sections larger than this are refused rather than allocated: a hostile
/// batch of a few KiB must not make the cleaner allocate gigabytes.
const MAX_DECOMPRESSED: u64 = 256 * 1024 * 1024;

/// Where the CRC-covered part of a batch begins.
const CRC_START: usize = 21;

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidRecords(reason.into())
}

/// One record of a decoded batch, borrowing the decompressed bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordRef<'a> {
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i32,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) has_value: bool,
    attributes: u8,
    /// From `keyLength` to the end of the record: copied unchanged when re-encoding.
    tail: &'a [u8],
    /// The whole record including its length prefix.
    raw: &'a [u8],
}

/// Zigzag varint reader over a slice.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn varlong(&mut self) -> Result<i64> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(invalid("truncated varint in record"));
            };
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(invalid("varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(invalid("varint longer than 10 bytes"))
    }

    fn varint(&mut self) -> Result<i32> {
        i32::try_from(self.varlong()?).map_err(|_| invalid("varint overflows 32 bits"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| invalid("record field extends past its record"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// A nullable length-prefixed byte string.
    fn bytes(&mut self) -> Result<Option<&'a [u8]>> {
        match self.varint()? {
            -1 => Ok(None),
            len if len < 0 => Err(invalid(format!("negative length {len} in record"))),
            len => self.take(len as usize).map(Some),
        }
    }
}

/// Parses `count` records from a decompressed record section.
pub(crate) fn parse_records(data: &[u8], count: i32) -> Result<Vec<RecordRef<'_>>> {
    let count = usize::try_from(count).map_err(|_| invalid("negative record count"))?;
    // Every record takes at least 7 bytes, so the count cannot make us allocate beyond the data.
    let mut records = Vec::with_capacity(count.min(data.len() / 7));
    let mut outer = Cursor { buf: data, pos: 0 };
    for _ in 0..count {
        let start = outer.pos;
        let len = outer.varint()?;
        let len = usize::try_from(len).map_err(|_| invalid("negative record length"))?;
        let body = outer.take(len)?;
        let mut c = Cursor { buf: body, pos: 0 };
        let attributes = *c.take(1)?.first().unwrap_or(&0);
        let timestamp_delta = c.varlong()?;
        let offset_delta = c.varint()?;
        let tail_start = c.pos;
        let key = c.bytes()?;
        let has_value = c.bytes()?.is_some();
        let headers = c.varint()?;
        for _ in 0..headers.max(0) {
            let name = c.bytes()?;
            if name.is_none() {
                return Err(invalid("null header key"));
            }
            c.bytes()?;
        }
        if c.pos != body.len() {
            return Err(invalid("record has trailing bytes"));
        }
        records.push(RecordRef {
            timestamp_delta,
            offset_delta,
            key,
            has_value,
            attributes,
            tail: &body[tail_start..],
            raw: &data[start..outer.pos],
        });
    }
    if outer.pos != data.len() {
        return Err(invalid("record section has bytes after its last record"));
    }
    Ok(records)
}

/// Decompresses the record section of `batch` (a whole batch) with its codec.
pub(crate) fn record_section(header: &BatchHeader, batch: &[u8]) -> Result<Vec<u8>> {
    let body = batch
        .get(BATCH_HEADER_LEN..header.total_len())
        .ok_or_else(|| invalid("batch shorter than its length field"))?;
    decompress(header.compression(), body)
}

fn read_bounded(reader: impl Read, hint: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(hint.min(MAX_DECOMPRESSED as usize));
    reader
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| invalid(format!("cannot decompress records: {e}")))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(invalid("decompressed records exceed 256 MiB"));
    }
    Ok(out)
}

/// The framing header the Java client's (xerial) snappy stream starts with.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

fn decompress(codec: i16, body: &[u8]) -> Result<Vec<u8>> {
    let hint = body.len() * 4;
    match codec {
        0 => Ok(body.to_vec()),
        1 => read_bounded(flate2::read::GzDecoder::new(body), hint),
        2 if body.starts_with(XERIAL_MAGIC) => {
            // xerial framing: a 16-byte header, then (u32 length, raw snappy block) chunks.
            let mut out = Vec::with_capacity(hint);
            let mut pos = XERIAL_HEADER_LEN;
            while pos < body.len() {
                let len = body
                    .get(pos..pos + 4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .ok_or_else(|| invalid("truncated snappy chunk length"))?;
                let chunk = body
                    .get(pos + 4..pos + 4 + len)
                    .ok_or_else(|| invalid("truncated snappy chunk"))?;
                let size = snap::raw::decompress_len(chunk)
                    .map_err(|e| invalid(format!("snappy: {e}")))?;
                if (out.len() + size) as u64 > MAX_DECOMPRESSED {
                    return Err(invalid("decompressed records exceed 256 MiB"));
                }
                let old = out.len();
                out.resize(old + size, 0);
                snap::raw::Decoder::new()
                    .decompress(chunk, &mut out[old..])
                    .map_err(|e| invalid(format!("snappy: {e}")))?;
                pos += 4 + len;
            }
            Ok(out)
        }
        2 => {
            let size =
                snap::raw::decompress_len(body).map_err(|e| invalid(format!("snappy: {e}")))?;
            if size as u64 > MAX_DECOMPRESSED {
                return Err(invalid("decompressed records exceed 256 MiB"));
            }
            snap::raw::Decoder::new()
                .decompress_vec(body)
                .map_err(|e| invalid(format!("snappy: {e}")))
        }
        3 => read_bounded(lz4_flex::frame::FrameDecoder::new(body), hint),
        4 => read_bounded(
            zstd::stream::read::Decoder::new(body).map_err(|e| invalid(format!("zstd: {e}")))?,
            hint,
        ),
        other => Err(invalid(format!("unknown compression codec {other}"))),
    }
}

fn compress(codec: i16, data: &[u8]) -> Result<Vec<u8>> {
    let failed = |e: std::io::Error| invalid(format!("cannot compress records: {e}"));
    match codec {
        0 => Ok(data.to_vec()),
        1 => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).map_err(failed)?;
            encoder.finish().map_err(failed)
        }
        2 => {
            // The xerial framing, which every client decodes (librdkafka and the Java client).
            let mut out = Vec::with_capacity(data.len() / 2 + 64);
            out.extend_from_slice(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01");
            let mut encoder = snap::raw::Encoder::new();
            for chunk in data.chunks(32 * 1024) {
                let block = encoder
                    .compress_vec(chunk)
                    .map_err(|e| invalid(format!("snappy: {e}")))?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        3 => {
            // Independent blocks: the Java client's LZ4 reader rejects dependent ones.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            encoder.write_all(data).map_err(failed)?;
            encoder.finish().map_err(|e| invalid(format!("lz4: {e}")))
        }
        4 => zstd::stream::encode_all(data, 3).map_err(failed),
        other => Err(invalid(format!("unknown compression codec {other}"))),
    }
}

/// The delete horizon (KIP-534) a previous clean stored in the batch, if any.
pub(crate) fn delete_horizon(header: &BatchHeader) -> Option<i64> {
    (header.attributes & DELETE_HORIZON_FLAG != 0).then_some(header.base_timestamp)
}

/// Timestamp of a record of a batch whose header is `header`.
pub(crate) fn record_timestamp(header: &BatchHeader, record: &RecordRef<'_>) -> i64 {
    header.base_timestamp.saturating_add(record.timestamp_delta)
}

/// `(offset, timestamp)` of every record of the whole batch `batch` (header `header`), in order:
/// what ListOffsets by timestamp and MAX_TIMESTAMP need past the batch header (Kafka answers with
/// a record's offset, not its batch's). With log-append time every record carries the batch's
/// max timestamp, as Kafka reads it.
pub(crate) fn record_times(header: &BatchHeader, batch: &[u8]) -> Result<Vec<(i64, i64)>> {
    let section = record_section(header, batch)?;
    let records = parse_records(&section, header.record_count)?;
    let append_time = header.attributes & LOG_APPEND_TIME_FLAG != 0;
    Ok(records
        .iter()
        .map(|r| {
            let timestamp = if append_time {
                header.max_timestamp
            } else {
                record_timestamp(header, r)
            };
            (header.base_offset + i64::from(r.offset_delta), timestamp)
        })
        .collect())
}

fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes the 61-byte header of `h` with the given fields and a record section, fixing length and CRC.
fn write_batch(out: &mut Vec<u8>, h: &BatchHeader, section: &[u8]) {
    let start = out.len();
    let batch_length = (BATCH_HEADER_LEN - LOG_OVERHEAD + section.len()) as i32;
    out.extend_from_slice(&h.base_offset.to_be_bytes());
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&h.partition_leader_epoch.to_be_bytes());
    out.push(h.magic as u8);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&h.attributes.to_be_bytes());
    out.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&h.base_timestamp.to_be_bytes());
    out.extend_from_slice(&h.max_timestamp.to_be_bytes());
    out.extend_from_slice(&h.producer_id.to_be_bytes());
    out.extend_from_slice(&h.producer_epoch.to_be_bytes());
    out.extend_from_slice(&h.base_sequence.to_be_bytes());
    out.extend_from_slice(&h.record_count.to_be_bytes());
    out.extend_from_slice(section);
    let crc = crc32c::crc32c(&out[start + CRC_START..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
}

/// Appends to `out` a copy of the batch `h` holding only `kept` of its records, as Kafka's cleaner
/// rebuilds a batch: same base offset, last offset delta, producer id, epoch, base sequence,
/// transactional and control flags, and codec. With `new_horizon`, the batch is stamped with that
/// delete horizon (the base timestamp becomes the horizon, record timestamp deltas are rebased).
pub(crate) fn write_filtered(
    out: &mut Vec<u8>,
    h: &BatchHeader,
    kept: &[RecordRef<'_>],
    new_horizon: Option<i64>,
) -> Result<()> {
    let mut header = *h;
    header.record_count = kept.len() as i32;
    let mut section = Vec::new();
    match new_horizon {
        None => {
            for record in kept {
                section.extend_from_slice(record.raw);
            }
        }
        Some(horizon) => {
            header.attributes |= DELETE_HORIZON_FLAG;
            header.base_timestamp = horizon;
            let mut body = Vec::new();
            for record in kept {
                let timestamp = record_timestamp(h, record);
                body.clear();
                body.push(record.attributes);
                put_varlong(&mut body, timestamp.saturating_sub(horizon));
                put_varlong(&mut body, i64::from(record.offset_delta));
                body.extend_from_slice(record.tail);
                put_varlong(&mut section, body.len() as i64);
                section.extend_from_slice(&body);
            }
        }
    }
    if h.attributes & LOG_APPEND_TIME_FLAG == 0 {
        header.max_timestamp = kept
            .iter()
            .map(|r| record_timestamp(h, r))
            .max()
            .unwrap_or(h.max_timestamp);
    }
    let section = compress(h.compression(), &section)?;
    write_batch(out, &header, &section);
    Ok(())
}

/// Appends the header of `h` with no records (Kafka's `writeEmptyHeader`): kept where a batch must
/// survive cleaning for its producer's sequence or its segment's last offset.
pub(crate) fn write_empty(out: &mut Vec<u8>, h: &BatchHeader) {
    let mut header = *h;
    header.record_count = 0;
    // No codec for no records, and no delete horizon: the base timestamp is the max, as Kafka writes it.
    header.attributes &= !(0x07 | DELETE_HORIZON_FLAG);
    header.base_timestamp = h.max_timestamp;
    write_batch(out, &header, &[]);
}

/// Indexes (within the payload, counting records across batches in order) of records without a
/// key: a compacted topic refuses them (Kafka's INVALID_RECORD with per-record errors).
/// Control batches are not looked at. The payload must already be valid batches
/// (see [`crate::validate_batches`]).
pub fn keyless_records(payload: &[u8]) -> Result<Vec<i32>> {
    let mut keyless = Vec::new();
    let mut pos = 0;
    let mut index = 0i32;
    while pos < payload.len() {
        let header = BatchHeader::parse(&payload[pos..])?;
        let batch = payload
            .get(pos..pos + header.total_len())
            .ok_or_else(|| invalid("truncated batch"))?;
        if !header.is_control() {
            let section = record_section(&header, batch)?;
            for record in parse_records(&section, header.record_count)? {
                if record.key.is_none() {
                    keyless.push(index);
                }
                index += 1;
            }
        }
        pos += header.total_len();
    }
    Ok(keyless)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// (key, value) of a test record; `None` is null.
    type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    /// Encodes one record (Kafka format) with the given deltas, key and value.
    pub(crate) fn record(
        ts_delta: i64,
        offset_delta: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut body = vec![0u8];
        put_varlong(&mut body, ts_delta);
        put_varlong(&mut body, i64::from(offset_delta));
        for field in [key, value] {
            match field {
                None => put_varlong(&mut body, -1),
                Some(b) => {
                    put_varlong(&mut body, b.len() as i64);
                    body.extend_from_slice(b);
                }
            }
        }
        // One header, to check headers survive byte for byte.
        put_varlong(&mut body, 1);
        put_varlong(&mut body, 1);
        body.push(b'h');
        put_varlong(&mut body, -1);
        let mut out = Vec::new();
        put_varlong(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
        out
    }

    /// A batch of records `(key, value)` at consecutive offset deltas, base timestamp 1000 + i.
    pub(crate) fn batch(codec: i16, producer_id: i64, records: &[KeyValue<'_>]) -> Vec<u8> {
        let mut section = Vec::new();
        for (i, (k, v)) in records.iter().enumerate() {
            section.extend(record(i as i64, i as i32, *k, *v));
        }
        let n = records.len() as i32;
        let header = BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: codec,
            last_offset_delta: n - 1,
            base_timestamp: 1000,
            max_timestamp: 1000 + i64::from(n) - 1,
            producer_id,
            producer_epoch: if producer_id >= 0 { 0 } else { -1 },
            base_sequence: if producer_id >= 0 { 0 } else { -1 },
            record_count: n,
        };
        let mut out = Vec::new();
        write_batch(&mut out, &header, &compress(codec, &section).unwrap());
        out
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(Cursor { buf: &buf, pos: 0 }.varlong().unwrap(), v);
        }
    }

    #[test]
    fn every_codec_round_trips_and_filters() {
        for codec in 0..=4 {
            let b = batch(
                codec,
                7,
                &[
                    (Some(b"a"), Some(b"1")),
                    (Some(b"b"), None),
                    (None, Some(b"3")),
                ],
            );
            let h = crate::validate_batches(&b).unwrap()[0];
            let section = record_section(&h, &b).unwrap();
            let records = parse_records(&section, h.record_count).unwrap();
            assert_eq!(records.len(), 3);
            assert_eq!(records[1].key, Some(&b"b"[..]));
            assert!(!records[1].has_value);
            assert_eq!(keyless_records(&b).unwrap(), vec![2]);

            let mut out = Vec::new();
            write_filtered(&mut out, &h, &records[1..2], Some(5000)).unwrap();
            let h2 = crate::batch::check_batch(&out).unwrap();
            assert_eq!(
                (h2.base_offset, h2.last_offset_delta, h2.record_count),
                (0, 2, 1)
            );
            assert_eq!((h2.producer_id, h2.base_sequence), (7, 0));
            assert_eq!(delete_horizon(&h2), Some(5000));
            assert_eq!(h2.compression(), codec);
            let section2 = record_section(&h2, &out).unwrap();
            let kept = parse_records(&section2, 1).unwrap();
            assert_eq!(kept[0].offset_delta, 1);
            assert_eq!(record_timestamp(&h2, &kept[0]), 1001);
            assert_eq!(h2.max_timestamp, 1001);
            assert_eq!(kept[0].tail, records[1].tail);
        }
    }

    #[test]
    fn record_times_name_each_records_offset_and_timestamp() {
        for codec in 0..=4 {
            let mut b = batch(codec, -1, &[(Some(b"a"), None), (Some(b"b"), None)]);
            b[..8].copy_from_slice(&40i64.to_be_bytes());
            let h = BatchHeader::parse(&b).unwrap();
            assert_eq!(record_times(&h, &b).unwrap(), vec![(40, 1000), (41, 1001)]);
        }
    }

    #[test]
    fn empty_batch_keeps_offsets_and_sequence() {
        let b = batch(1, 3, &[(Some(b"a"), Some(b"1")), (Some(b"a"), Some(b"2"))]);
        let h = crate::validate_batches(&b).unwrap()[0];
        let mut out = Vec::new();
        write_empty(&mut out, &h);
        let e = crate::batch::check_batch(&out).unwrap();
        assert_eq!(e.total_len(), BATCH_HEADER_LEN);
        assert_eq!(
            (e.record_count, e.last_offset_delta, e.producer_id),
            (0, 1, 3)
        );
        assert_eq!(e.compression(), 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_records(&[0x80, 0x80], 1).is_err());
        assert!(parse_records(&[2, 0, 0], 5).is_err());
        assert!(decompress(1, b"not gzip").is_err());
        assert!(decompress(4, b"not zstd").is_err());
        assert!(
            decompress(
                2,
                b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x10\x00"
            )
            .is_err()
        );
    }
}
