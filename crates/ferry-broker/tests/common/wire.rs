//! One Kafka request over a raw TCP connection, encoded and decoded with `kafka-protocol`: for
//! APIs and fields that librdkafka's admin API does not expose.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `req` at `version` and decodes the response at the same version.
pub async fn call<Req: Encodable, Resp: Decodable>(
    s: &mut TcpStream,
    api: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("wire-test")))
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    req.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("{api:?} v{version}: cannot encode request: {e}"));
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&buf).await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(10), s.read_i32())
        .await
        .unwrap_or_else(|_| panic!("{api:?} v{version}: no response"))
        .unwrap_or_else(|e| panic!("{api:?} v{version}: connection closed: {e}"));
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await.unwrap();
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, api.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    let resp = Resp::decode(&mut body, version)
        .unwrap_or_else(|e| panic!("{api:?} v{version}: bad response: {e}"));
    assert!(!body.has_remaining(), "{api:?} v{version}: trailing bytes");
    resp
}

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}
