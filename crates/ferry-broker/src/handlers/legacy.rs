//! UNSUPPORTED_VERSION answers for the request versions Apache Kafka 4.0 removed (KIP-896) but
//! whose responses can still say so: Produce v0-2, Fetch v0-3, ListOffsets v0 and OffsetCommit
//! v0-1. An old client then logs "unsupported version" for each partition instead of seeing its
//! connection dropped and retrying for ever.
//!
//! Written by hand because the `kafka-protocol` crate, generated from Kafka 4.x's message
//! definitions, has no codec for these versions any more. Each request is read only as far as
//! its topic and partition lists (the response names them); the formats are fixed and
//! non-flexible (request header v1, response header v0). Parsing is total: anything malformed or
//! trailing answers `None`, and the connection is closed as for any other bad frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;

/// The whole response frame (length prefix included) telling the client that `version` of `api`
/// is not supported, or `None` if none can be given: another API or version, a malformed
/// request, or a produce with acks=0 (which expects no response; Kafka closes the connection).
pub fn unsupported_version(api: ApiKey, version: i16, frame: &[u8]) -> Option<Bytes> {
    let mut r = Reader(frame);
    // Request header v1: api key, api version, correlation id, nullable client id.
    r.i16()?;
    r.i16()?;
    let correlation_id = r.i32()?;
    r.nullable_string()?;
    let mut out = Writer::new(correlation_id);
    match (api, version) {
        (ApiKey::Produce, 0..=2) => {
            let acks = r.i16()?;
            r.i32()?; // timeout
            let topics = r.topics(Reader::nullable_bytes)?;
            if acks == 0 {
                return None;
            }
            out.topics(&topics, |w| {
                w.error();
                w.0.put_i64(-1); // base offset
                if version >= 2 {
                    w.0.put_i64(-1); // log append time
                }
            });
            if version >= 1 {
                out.0.put_i32(0); // throttle time, after the responses until v2
            }
        }
        (ApiKey::Fetch, 0..=3) => {
            r.i32()?; // replica id
            r.i32()?; // max wait
            r.i32()?; // min bytes
            if version >= 3 {
                r.i32()?; // max bytes
            }
            let topics = r.topics(|r| {
                r.i64()?; // fetch offset
                r.i32() // partition max bytes
            })?;
            if version >= 1 {
                out.0.put_i32(0); // throttle time, first from v1 on
            }
            out.topics(&topics, |w| {
                w.error();
                w.0.put_i64(-1); // high watermark
                w.0.put_i32(0); // empty record set
            });
        }
        (ApiKey::ListOffsets, 0) => {
            r.i32()?; // replica id
            let topics = r.topics(|r| {
                r.i64()?; // timestamp
                r.i32() // max number of offsets
            })?;
            out.topics(&topics, |w| {
                w.error();
                w.0.put_i32(0); // no offsets
            });
        }
        (ApiKey::OffsetCommit, 0..=1) => {
            r.string()?; // group id
            if version >= 1 {
                r.i32()?; // generation id
                r.string()?; // member id
            }
            let topics = r.topics(|r| {
                r.i64()?; // offset
                if version >= 1 {
                    r.i64()?; // commit timestamp
                }
                r.nullable_string() // metadata
            })?;
            out.topics(&topics, |w| w.error());
        }
        _ => return None,
    }
    r.0.is_empty().then(|| out.finish())
}

/// A topic's name (raw bytes, echoed back) and its partition indexes.
type Topics<'a> = Vec<(&'a [u8], Vec<i32>)>;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn i16(&mut self) -> Option<i16> {
        (self.0.len() >= 2).then(|| self.0.get_i16())
    }

    fn i32(&mut self) -> Option<i32> {
        (self.0.len() >= 4).then(|| self.0.get_i32())
    }

    fn i64(&mut self) -> Option<i64> {
        (self.0.len() >= 8).then(|| self.0.get_i64())
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(head)
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.i16()?).ok()?;
        self.take(len)
    }

    fn nullable_string(&mut self) -> Option<()> {
        match self.i16()? {
            -1 => Some(()),
            len => self.take(usize::try_from(len).ok()?).map(|_| ()),
        }
    }

    fn nullable_bytes(&mut self) -> Option<()> {
        match self.i32()? {
            -1 => Some(()),
            len => self.take(usize::try_from(len).ok()?).map(|_| ()),
        }
    }

    /// An array of counted elements. A count is checked against the bytes left before anything
    /// is allocated for it (each element takes at least one byte), so a lying count cannot
    /// allocate.
    fn array<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let n = usize::try_from(self.i32()?).ok()?;
        if n > self.0.len() {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(item(self)?);
        }
        Some(out)
    }

    /// `[topic name, [partition index, rest of the partition]]`, the shape of all four requests.
    fn topics<T>(&mut self, mut rest: impl FnMut(&mut Self) -> Option<T>) -> Option<Topics<'a>> {
        self.array(|r| {
            let name = r.string()?;
            let partitions = r.array(|r| {
                let index = r.i32()?;
                rest(r)?;
                Some(index)
            })?;
            Some((name, partitions))
        })
    }
}

struct Writer(BytesMut);

impl Writer {
    fn new(correlation_id: i32) -> Writer {
        let mut buf = BytesMut::with_capacity(128);
        buf.put_i32(0); // length, patched in `finish`
        buf.put_i32(correlation_id); // response header v0
        Writer(buf)
    }

    fn error(&mut self) {
        self.0.put_i16(ResponseError::UnsupportedVersion.code());
    }

    /// `[topic name, [partition index, what `partition` writes]]`.
    fn topics(&mut self, topics: &Topics<'_>, mut partition: impl FnMut(&mut Self)) {
        self.0.put_i32(topics.len() as i32);
        for (name, partitions) in topics {
            self.0.put_i16(name.len() as i16);
            self.0.put_slice(name);
            self.0.put_i32(partitions.len() as i32);
            for &index in partitions {
                self.0.put_i32(index);
                partition(self);
            }
        }
    }

    fn finish(mut self) -> Bytes {
        let len = (self.0.len() - 4) as i32;
        self.0[..4].copy_from_slice(&len.to_be_bytes());
        self.0.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(api: ApiKey, version: i16) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i16(api as i16);
        b.put_i16(version);
        b.put_i32(77);
        b.put_i16(-1);
        b
    }

    fn name(b: &mut BytesMut, s: &str) {
        b.put_i16(s.len() as i16);
        b.put_slice(s.as_bytes());
    }

    #[test]
    fn produce_v2_names_each_partition_with_unsupported_version() {
        let mut b = header(ApiKey::Produce, 2);
        b.put_i16(1); // acks
        b.put_i32(1000);
        b.put_i32(1);
        name(&mut b, "t");
        b.put_i32(2);
        for p in [0, 3] {
            b.put_i32(p);
            b.put_i32(3);
            b.put_slice(b"abc");
        }
        let out = unsupported_version(ApiKey::Produce, 2, &b).unwrap();
        let mut expected = BytesMut::new();
        expected.put_i32(77);
        expected.put_i32(1);
        name(&mut expected, "t");
        expected.put_i32(2);
        for p in [0, 3] {
            expected.put_i32(p);
            expected.put_i16(35);
            expected.put_i64(-1);
            expected.put_i64(-1);
        }
        expected.put_i32(0);
        assert_eq!(&out[4..], &expected[..]);
        assert_eq!(
            out.len() - 4,
            i32::from_be_bytes(out[..4].try_into().unwrap()) as usize
        );
    }

    #[test]
    fn acks_zero_lying_counts_and_trailing_bytes_get_no_answer() {
        let mut b = header(ApiKey::Produce, 0);
        b.put_i16(0); // acks=0
        b.put_i32(1000);
        b.put_i32(0);
        assert!(unsupported_version(ApiKey::Produce, 0, &b).is_none());

        let mut b = header(ApiKey::ListOffsets, 0);
        b.put_i32(-1);
        b.put_i32(i32::MAX); // topics that are not there
        assert!(unsupported_version(ApiKey::ListOffsets, 0, &b).is_none());

        let mut b = header(ApiKey::OffsetCommit, 0);
        name(&mut b, "g");
        b.put_i32(0);
        b.put_u8(9);
        assert!(unsupported_version(ApiKey::OffsetCommit, 0, &b).is_none());
        assert!(unsupported_version(ApiKey::Metadata, 0, &b).is_none());
    }
}
