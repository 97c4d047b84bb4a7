//! Framing and decoding of requests, encoding of responses.
//!
//! A Kafka frame is a big-endian i32 length followed by that many bytes: request header, then
//! body. Everything here is total: any byte string yields a value or an error, never a panic,
//! because a malformed frame must close only its own connection (see the proptest below).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Why a frame could not be turned into a request.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a request header needs.
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    /// The API key is not a Kafka API at all.
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    /// The header or body did not parse.
    #[error("cannot decode {api:?} v{version}: {reason}")]
    Malformed {
        /// Which API.
        api: ApiKey,
        /// Which version the client claimed.
        version: i16,
        /// What the decoder said.
        reason: String,
    },
}

/// The first fields of every request header, readable before knowing whether we support the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// Raw API key.
    pub api_key: i16,
    /// Requested version.
    pub api_version: i16,
    /// Echoed back in the response.
    pub correlation_id: i32,
}

/// Read the api key, version and correlation id without consuming the frame.
pub fn preamble(frame: &[u8]) -> Result<Preamble, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let mut b = &frame[..8];
    Ok(Preamble {
        api_key: b.get_i16(),
        api_version: b.get_i16(),
        correlation_id: b.get_i32(),
    })
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    /// The header (client id, correlation id, version).
    pub header: RequestHeader,
    /// Which API.
    pub api: ApiKey,
    /// The body.
    pub body: RequestKind,
}

/// Decode a whole frame (without its length prefix). The API must be one the broker supports at
/// that version; callers answer unsupported versions before calling this.
pub fn decode_request(mut frame: Bytes) -> Result<Request, DecodeError> {
    let pre = preamble(&frame)?;
    let api = ApiKey::try_from(pre.api_key).map_err(|_| DecodeError::UnknownApiKey(pre.api_key))?;
    let version = pre.api_version;
    let malformed = |reason: String| DecodeError::Malformed {
        api,
        version,
        reason,
    };
    if !api
        .valid_versions()
        .intersect(&kafka_protocol::protocol::VersionRange {
            min: version,
            max: version,
        })
        .is_empty()
    {
        // A version the codec knows: decode it. The codec returns errors for short or
        // inconsistent input; catch_unwind is a second line of defence so that a bug in the
        // generated code can never take more than this one connection down.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let header = RequestHeader::decode(&mut frame, api.request_header_version(version))?;
            let body = RequestKind::decode(api, &mut frame, version)?;
            anyhow::Ok((header, body))
        }));
        match decoded {
            Ok(Ok((header, body))) => Ok(Request { header, api, body }),
            // `{:#}` keeps the cause ("Array length 2147483647 is more than the 4 bytes left").
            Ok(Err(e)) => Err(malformed(format!("{e:#}"))),
            Err(_) => Err(malformed("decoder panicked".into())),
        }
    } else {
        Err(malformed("version outside the codec's range".into()))
    }
}

/// Encode a response frame, length prefix included.
pub fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // length, patched below
    // ApiVersions responses always use header v0 so a client can parse them before it knows
    // which versions the broker speaks (KIP-511).
    let header_version = if api == ApiKey::ApiVersions {
        0
    } else {
        api.response_header_version(version)
    };
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)?;
    body.encode(&mut buf, version)?;
    let len = i32::try_from(buf.len() - 4)?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions;
    use proptest::prelude::*;

    fn frame(api_key: i16, version: i16, rest: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(api_key);
        b.put_i16(version);
        b.put_i32(7);
        b.put_slice(rest);
        b.freeze()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Random bytes never panic the decoder.
        #[test]
        fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(Bytes::from(bytes));
        }

        /// A valid header for every supported API and version, followed by random bytes.
        #[test]
        fn random_bodies_never_panic(
            idx in 0..versions::SUPPORTED.len(),
            v in 0i16..20,
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let s = versions::SUPPORTED[idx];
            let version = s.min + v % (s.max - s.min + 1);
            let _ = decode_request(frame(s.key as i16, version, &body));
        }

        /// The same, with bodies made mostly of 0x00, 0x7f and 0xff, so that lengths and counts
        /// near i32::MAX or u32::MAX come up in most cases rather than a few: a decoder that
        /// allocates a declared size before checking it aborts this test process.
        #[test]
        fn extreme_lengths_never_abort(
            idx in 0..versions::SUPPORTED.len(),
            v in 0i16..20,
            body in proptest::collection::vec(
                prop_oneof![Just(0x00u8), Just(0x7f), Just(0xff), any::<u8>()],
                0..64,
            ),
        ) {
            let s = versions::SUPPORTED[idx];
            let version = s.min + v % (s.max - s.min + 1);
            let _ = decode_request(frame(s.key as i16, version, &[&[0xff, 0xff, 0][..], &body].concat()));
        }
    }

    /// A count larger than the bytes left is refused before anything is allocated: Metadata's topic
    /// array claiming i32::MAX entries (v0) or 2^32 - 2 (v9, compact), in a frame of a few bytes.
    #[test]
    fn impossible_array_lengths_are_errors_not_allocations() {
        // After the header's null client id (and, flexible, its empty tagged fields).
        let v0 = frame(3, 0, &[0xff, 0xff, 0x7f, 0xff, 0xff, 0xff]);
        let v9 = frame(3, 9, &[0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        for (what, bytes) in [("v0", v0), ("v9", v9)] {
            let err = decode_request(bytes).expect_err(what).to_string();
            assert!(err.contains("bytes left"), "{what}: {err}");
        }
    }

    #[test]
    fn short_frames_are_errors() {
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 1, 2])),
            Err(DecodeError::TooShort(3))
        ));
    }

    #[test]
    fn unknown_api_key_is_an_error() {
        assert!(matches!(
            decode_request(frame(999, 0, &[])),
            Err(DecodeError::UnknownApiKey(999))
        ));
    }
}
