//! Kafka record batches (magic 2), read only as far as their 61-byte header.
//!
//! The log stores batches verbatim: it never decodes records. All it needs is the header (offsets,
//! length, timestamps, producer fields) and the CRC-32C, which covers everything from `attributes`
//! to the end of the batch. `baseOffset` and `partitionLeaderEpoch` lie outside the CRC, which is
//! why the log can assign offsets by rewriting `baseOffset` in place without recomputing it.
//!
//! Header layout (big-endian):
//!
//! | bytes    | field                 |
//! |----------|-----------------------|
//! | 0..8     | baseOffset i64        |
//! | 8..12    | batchLength i32 (bytes after this field) |
//! | 12..16   | partitionLeaderEpoch i32 |
//! | 16       | magic i8 (2)          |
//! | 17..21   | crc u32 (CRC-32C of 21..end) |
//! | 21..23   | attributes i16        |
//! | 23..27   | lastOffsetDelta i32   |
//! | 27..35   | baseTimestamp i64     |
//! | 35..43   | maxTimestamp i64      |
//! | 43..51   | producerId i64        |
//! | 51..53   | producerEpoch i16     |
//! | 53..57   | baseSequence i32      |
//! | 57..61   | recordCount i32       |

use crate::error::{Error, Result};

/// Size of a magic-2 record batch header; the smallest possible batch.
pub const BATCH_HEADER_LEN: usize = 61;

/// Bytes before the `batchLength` count starts: `baseOffset` and `batchLength` themselves.
pub(crate) const LOG_OVERHEAD: usize = 12;

/// Smallest legal `batchLength`: a header with no records.
const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;

/// Where the CRC-covered part of a batch begins.
const CRC_START: usize = 21;

/// The only record batch format the log accepts.
pub const MAGIC: i8 = 2;

/// Attribute bits 0-2: the compression codec; codecs above zstd (4) do not exist.
const COMPRESSION_MASK: i16 = 0x07;
const MAX_COMPRESSION: i16 = 4;
const TRANSACTIONAL_FLAG: i16 = 1 << 4;
const CONTROL_FLAG: i16 = 1 << 5;

/// The decoded 61-byte header of a magic-2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the start of `buf`. Checks only what the header alone can tell: the
    /// magic byte, that `batchLength` covers at least a header, and that `lastOffsetDelta` is not
    /// negative. The CRC and the batch body are not looked at (see [`validate_batches`]).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader> {
        let Some(h) = buf.get(..BATCH_HEADER_LEN) else {
            return Err(Error::InvalidRecords(format!(
                "batch header needs {BATCH_HEADER_LEN} bytes, got {}",
                buf.len()
            )));
        };
        let header = BatchHeader {
            base_offset: i64::from_be_bytes(array(&h[0..8])),
            batch_length: i32::from_be_bytes(array(&h[8..12])),
            partition_leader_epoch: i32::from_be_bytes(array(&h[12..16])),
            magic: h[16] as i8,
            crc: u32::from_be_bytes(array(&h[17..21])),
            attributes: i16::from_be_bytes(array(&h[21..23])),
            last_offset_delta: i32::from_be_bytes(array(&h[23..27])),
            base_timestamp: i64::from_be_bytes(array(&h[27..35])),
            max_timestamp: i64::from_be_bytes(array(&h[35..43])),
            producer_id: i64::from_be_bytes(array(&h[43..51])),
            producer_epoch: i16::from_be_bytes(array(&h[51..53])),
            base_sequence: i32::from_be_bytes(array(&h[53..57])),
            record_count: i32::from_be_bytes(array(&h[57..61])),
        };
        if header.magic != MAGIC {
            return Err(Error::InvalidRecords(format!(
                "unsupported record batch magic {} (only {MAGIC} is accepted)",
                header.magic
            )));
        }
        if header.batch_length < MIN_BATCH_LENGTH {
            return Err(Error::InvalidRecords(format!(
                "batch length {} is shorter than a batch header",
                header.batch_length
            )));
        }
        if header.last_offset_delta < 0 {
            return Err(Error::InvalidRecords(format!(
                "negative last offset delta {}",
                header.last_offset_delta
            )));
        }
        Ok(header)
    }

    /// Total size of the batch in bytes, including `baseOffset` and `batchLength`.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Offset right after the batch: the next offset the log assigns.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    /// Whether the batch is a control batch (transaction markers), never shown to applications.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }
}

/// Version of the control record key and value (Kafka's `ControlRecordType` and
/// `EndTransactionMarker`), the only one Kafka has defined.
const CONTROL_VERSION: i16 = 0;
/// Control record type of an abort marker; a commit marker is 1.
const CONTROL_TYPE_ABORT: i16 = 0;
const CONTROL_TYPE_COMMIT: i16 = 1;

/// Builds the control batch that ends a transaction in one partition: a transactional control
/// batch (magic 2) of one record whose key is (version 0, type abort 0 / commit 1) and whose value
/// is (version 0, coordinator epoch), as Kafka's transaction markers are. The base offset is left at
/// 0 for the append to assign.
///
/// Written by hand rather than with a Kafka codec crate: this crate deliberately depends on no
/// protocol library, and the record is 17 fixed bytes whose varints are all single bytes.
pub(crate) fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let kind = if commit {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    };
    let mut record = Vec::with_capacity(17);
    record.push(0); // attributes
    record.push(0); // timestamp delta, varint 0
    record.push(0); // offset delta, varint 0
    record.push(zigzag1(4)); // key length
    record.extend_from_slice(&CONTROL_VERSION.to_be_bytes());
    record.extend_from_slice(&kind.to_be_bytes());
    record.push(zigzag1(6)); // value length
    record.extend_from_slice(&CONTROL_VERSION.to_be_bytes());
    record.extend_from_slice(&coordinator_epoch.to_be_bytes());
    record.push(0); // header count
    let mut b = vec![0u8; BATCH_HEADER_LEN];
    let batch_length = (BATCH_HEADER_LEN - LOG_OVERHEAD + 1 + record.len()) as i32;
    b[8..12].copy_from_slice(&batch_length.to_be_bytes());
    b[16] = MAGIC as u8;
    b[21..23].copy_from_slice(&(TRANSACTIONAL_FLAG | CONTROL_FLAG).to_be_bytes());
    // lastOffsetDelta 0 (already zero)
    b[27..35].copy_from_slice(&timestamp.to_be_bytes());
    b[35..43].copy_from_slice(&timestamp.to_be_bytes());
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes()); // control batches carry no sequence
    b[57..61].copy_from_slice(&1i32.to_be_bytes());
    b.push(zigzag1(record.len() as i8));
    b.extend_from_slice(&record);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The one-byte zigzag varint of a small non-negative number (below 64).
fn zigzag1(n: i8) -> u8 {
    (n as u8) << 1
}

/// Whether the control batch at the start of `batch` is a commit marker (`Some(true)`), an abort
/// marker (`Some(false)`), or something else (`None`: another control type, compressed, or too
/// short). Only uncompressed control batches exist: Kafka brokers write markers uncompressed.
pub(crate) fn marker_type(batch: &[u8]) -> Option<bool> {
    let header = BatchHeader::parse(batch).ok()?;
    if !header.is_control() || header.compression() != 0 {
        return None;
    }
    // Record: length, attributes, timestamp delta, offset delta, key length (all one-byte
    // varints for a marker), then the key: version i16, type i16.
    let key = batch.get(BATCH_HEADER_LEN + 5..BATCH_HEADER_LEN + 9)?;
    if batch[BATCH_HEADER_LEN + 4] != zigzag1(4) {
        return None;
    }
    match i16::from_be_bytes([key[2], key[3]]) {
        CONTROL_TYPE_COMMIT => Some(true),
        CONTROL_TYPE_ABORT => Some(false),
        _ => None,
    }
}

/// Bytes of a control batch that [`marker_type`] needs.
pub(crate) const MARKER_PREFIX_LEN: usize = BATCH_HEADER_LEN + 9;

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(bytes);
    out
}

/// Checks one complete batch at the start of `buf` (header, length within `buf`, CRC-32C) and returns
/// its header. This is the check recovery applies to the active segment: it does not insist on the
/// producer-side rules that [`validate_batches`] adds.
pub(crate) fn check_batch(buf: &[u8]) -> Result<BatchHeader> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_len();
    let Some(batch) = buf.get(..total) else {
        return Err(Error::InvalidRecords(format!(
            "batch of {total} bytes is truncated to {} bytes",
            buf.len()
        )));
    };
    let actual = crc32c::crc32c(&batch[CRC_START..]);
    if actual != header.crc {
        return Err(Error::CorruptBatch(format!(
            "CRC-32C mismatch: header says {:#010x}, data gives {actual:#010x}",
            header.crc
        )));
    }
    Ok(header)
}

/// Validates a produce payload: one or more complete magic-2 batches back to back, each with a
/// correct CRC-32C, a known compression codec and `recordCount == lastOffsetDelta + 1` (the rule Kafka
/// applies to produced batches), and nothing trailing. Returns the headers in order.
///
/// A bad CRC is [`Error::CorruptBatch`]; every other defect is [`Error::InvalidRecords`]. Never panics.
pub fn validate_batches(buf: &[u8]) -> Result<Vec<BatchHeader>> {
    if buf.is_empty() {
        return Err(Error::InvalidRecords("no record batches".into()));
    }
    let mut headers = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let header = check_batch(&buf[pos..]).map_err(|e| at_position(e, pos))?;
        if header.compression() > MAX_COMPRESSION {
            return Err(Error::InvalidRecords(format!(
                "unknown compression codec {} in batch at byte {pos}",
                header.compression()
            )));
        }
        if i64::from(header.record_count) != i64::from(header.last_offset_delta) + 1 {
            return Err(Error::InvalidRecords(format!(
                "batch at byte {pos} has {} records but a last offset delta of {}",
                header.record_count, header.last_offset_delta
            )));
        }
        pos += header.total_len();
        headers.push(header);
    }
    Ok(headers)
}

fn at_position(error: Error, pos: usize) -> Error {
    match error {
        Error::CorruptBatch(reason) => {
            Error::CorruptBatch(format!("batch at byte {pos}: {reason}"))
        }
        Error::InvalidRecords(reason) => {
            Error::InvalidRecords(format!("batch at byte {pos}: {reason}"))
        }
        other => other,
    }
}

/// Sets `baseOffset` of the batch at the start of `batch` and zeroes its `partitionLeaderEpoch`.
/// Both fields are outside the CRC, so the batch stays valid.
pub(crate) fn assign_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&0i32.to_be_bytes());
}

/// Length of the longest prefix of `buf` made of whole batches, judged by their length fields only.
/// Used to trim a read to batch boundaries.
pub(crate) fn whole_batches_len(buf: &[u8]) -> usize {
    let mut pos = 0;
    while let Some(len) = buf.get(pos + 8..pos + LOG_OVERHEAD) {
        let batch_length = i32::from_be_bytes(array(len));
        if batch_length < MIN_BATCH_LENGTH {
            break;
        }
        let end = pos + LOG_OVERHEAD + batch_length as usize;
        if end > buf.len() {
            break;
        }
        pos = end;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid batch: a header with `record_count` claimed records and no record bytes. The
    /// log never looks inside, so this is enough to exercise header handling.
    fn header_only_batch(last_offset_delta: i32, record_count: i32) -> Vec<u8> {
        let mut b = vec![0u8; BATCH_HEADER_LEN];
        b[8..12].copy_from_slice(&MIN_BATCH_LENGTH.to_be_bytes());
        b[16] = MAGIC as u8;
        b[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
        b[57..61].copy_from_slice(&record_count.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn header_round_trips_fields() {
        let b = header_only_batch(2, 3);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.total_len(), BATCH_HEADER_LEN);
        assert_eq!(h.last_offset(), 2);
        assert_eq!(validate_batches(&b).unwrap(), vec![h]);
    }

    #[test]
    fn rewriting_base_offset_keeps_crc_valid() {
        let mut b = header_only_batch(0, 1);
        assign_offset(&mut b, 1234);
        assert_eq!(validate_batches(&b).unwrap()[0].base_offset, 1234);
    }

    #[test]
    fn count_must_match_offset_delta() {
        let b = header_only_batch(1, 1);
        assert!(matches!(
            validate_batches(&b),
            Err(Error::InvalidRecords(_))
        ));
    }

    #[test]
    fn control_batches_are_valid_and_say_their_type() {
        for commit in [true, false] {
            let b = control_batch(7, 3, commit, 0, 1_700_000_000_000);
            let h = validate_batches(&b).unwrap()[0];
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch, h.record_count), (7, 3, 1));
            assert_eq!(marker_type(&b), Some(commit));
        }
        assert_eq!(marker_type(&header_only_batch(0, 1)), None);
    }

    #[test]
    fn whole_batches_len_stops_at_partial_batch() {
        let mut two = header_only_batch(0, 1);
        two.extend(header_only_batch(0, 1));
        assert_eq!(whole_batches_len(&two), 2 * BATCH_HEADER_LEN);
        assert_eq!(whole_batches_len(&two[..100]), BATCH_HEADER_LEN);
        assert_eq!(whole_batches_len(&two[..5]), 0);
    }
}
