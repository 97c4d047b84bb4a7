//! Bad input closes only the offending connection, or gets the right Kafka error code; the
//! broker keeps serving everyone else.

mod common;

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::producer::FutureRecord;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn send_raw(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
}

/// True if the broker closed the connection (EOF or reset) within a few seconds.
async fn closed_by_broker(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a response to an earlier valid request; keep reading
            Err(_) => return false,
        }
    }
}

/// Encode a request frame with the crate's client side.
fn frame<R: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &R) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")));
    header
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

async fn read_response(stream: &mut TcpStream) -> Bytes {
    let len = tokio::time::timeout(Duration::from_secs(5), stream.read_i32())
        .await
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await.unwrap();
    Bytes::from(buf)
}

/// Produce and consume one message with librdkafka: the broker still serves normal clients.
async fn normal_client_works(bootstrap: &str, topic: &str) {
    let producer = common::producer(bootstrap, "all");
    let delivery = producer
        .send(
            FutureRecord::to(topic).key("k").payload("still here"),
            Duration::from_secs(10),
        )
        .await
        .expect("delivered");
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    let got = tokio::task::spawn_blocking(move || {
        common::consume_from_beginning(
            &bootstrap,
            &[(&topic, 0)],
            delivery.offset as usize + 1,
            Duration::from_secs(10),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        got.last().and_then(|g| g.value.clone()),
        Some(b"still here".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.max_request_bytes = 1024 * 1024;
    let broker = common::start_with(config).await;
    let addr = broker.local_addr();

    // A connection that stays open and idle the whole time: it must survive the others.
    let mut bystander = TcpStream::connect(addr).await.unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "oversized length prefix",
            200_000_000i32.to_be_bytes().to_vec(),
        ),
        ("negative length prefix", (-5i32).to_be_bytes().to_vec()),
        (
            "frame shorter than a header",
            [&4i32.to_be_bytes()[..], &[1, 2, 3, 4]].concat(),
        ),
        (
            "unknown api key",
            [
                &12i32.to_be_bytes()[..],
                &[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
            ]
            .concat(),
        ),
        (
            "random bytes",
            [&64i32.to_be_bytes()[..], &[0xA5; 64]].concat(),
        ),
        (
            // A 14-byte Metadata v0 request whose topic array claims i32::MAX entries: the decoder
            // must refuse it before allocating (once that was a ~150 GB allocation that aborted).
            "metadata v0 claiming 2^31 - 1 topics",
            [
                &14i32.to_be_bytes()[..],
                &[0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
            ]
            .concat(),
        ),
        (
            // The same as a flexible (compact) array: unsigned varint 2^32 - 1 = 2^32 - 2 topics.
            "metadata v9 claiming 2^32 - 2 topics",
            [
                &16i32.to_be_bytes()[..],
                &[
                    0, 3, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x0f,
                ],
            ]
            .concat(),
        ),
        (
            "truncated metadata body",
            [
                &10i32.to_be_bytes()[..],
                &[0, 3, 0, 9, 0, 0, 0, 1, 0xff, 0xff],
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in cases {
        let mut s = TcpStream::connect(addr).await.unwrap();
        send_raw(&mut s, &bytes).await;
        assert!(closed_by_broker(&mut s).await, "{what}: connection closed");
    }

    // The idle connection still works: ApiVersions on it gets an answer.
    send_raw(
        &mut bystander,
        &frame(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default()),
    )
    .await;
    let mut resp = read_response(&mut bystander).await;
    assert_eq!(
        ResponseHeader::decode(&mut resp, 0).unwrap().correlation_id,
        1
    );
    assert_eq!(
        ApiVersionsResponse::decode(&mut resp, 3)
            .unwrap()
            .error_code,
        0
    );

    normal_client_works(&broker.bootstrap_servers(), "after-garbage").await;
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_api_versions_version_gets_unsupported_version_and_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();
    // A version far beyond what anyone implements: header v2 layout, body unparsed.
    let mut buf = BytesMut::new();
    buf.put_i16(ApiKey::ApiVersions as i16);
    buf.put_i16(99);
    buf.put_i32(42);
    buf.put_i16(-1); // null client id
    buf.put_u8(0); // no tagged fields
    let mut framed = BytesMut::new();
    framed.put_i32(buf.len() as i32);
    framed.put_slice(&buf);
    send_raw(&mut s, &framed).await;
    let mut resp = read_response(&mut s).await;
    assert_eq!(resp.get_i32(), 42, "correlation id");
    let body = ApiVersionsResponse::decode(&mut resp, 0).unwrap();
    assert_eq!(body.error_code, 35, "UNSUPPORTED_VERSION");
    let produce = body
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Produce as i16)
        .expect("Produce listed");
    assert!(produce.min_version >= 3, "record batches need Produce v3+");
    broker.shutdown().await.unwrap();
}

/// The request versions Kafka 4.0 removed (KIP-896) but whose responses can carry an error get
/// UNSUPPORTED_VERSION for every partition they name, and the connection stays open. Frames are
/// written by hand: no codec speaks these versions any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_versions_get_unsupported_version_not_a_dropped_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();
    fn string(b: &mut BytesMut, v: &str) {
        b.put_i16(v.len() as i16);
        b.put_slice(v.as_bytes());
    }
    // (api, version, body after the header, bytes each partition's answer has after its index
    // and error code)
    let mut cases: Vec<(ApiKey, i16, BytesMut, usize)> = Vec::new();
    for v in 0..=2 {
        let mut b = BytesMut::new();
        b.put_i16(-1); // acks
        b.put_i32(1000);
        b.put_i32(1);
        string(&mut b, "legacy");
        b.put_i32(2);
        for p in [0, 1] {
            b.put_i32(p);
            b.put_i32(3);
            b.put_slice(b"xyz");
        }
        cases.push((ApiKey::Produce, v, b, if v >= 2 { 16 } else { 8 }));
    }
    for v in 0..=3 {
        let mut b = BytesMut::new();
        b.put_i32(-1);
        b.put_i32(100);
        b.put_i32(1);
        if v >= 3 {
            b.put_i32(1 << 20);
        }
        b.put_i32(1);
        string(&mut b, "legacy");
        b.put_i32(2);
        for p in [0, 1] {
            b.put_i32(p);
            b.put_i64(0);
            b.put_i32(1 << 20);
        }
        cases.push((ApiKey::Fetch, v, b, 12));
    }
    let mut b = BytesMut::new();
    b.put_i32(-1);
    b.put_i32(1);
    string(&mut b, "legacy");
    b.put_i32(2);
    for p in [0, 1] {
        b.put_i32(p);
        b.put_i64(-1);
        b.put_i32(1);
    }
    cases.push((ApiKey::ListOffsets, 0, b, 4));
    for v in 0..=1 {
        let mut b = BytesMut::new();
        string(&mut b, "legacy-group");
        if v >= 1 {
            b.put_i32(-1);
            string(&mut b, "");
        }
        b.put_i32(1);
        string(&mut b, "legacy");
        b.put_i32(2);
        for p in [0, 1] {
            b.put_i32(p);
            b.put_i64(5);
            if v >= 1 {
                b.put_i64(-1);
            }
            b.put_i16(-1);
        }
        cases.push((ApiKey::OffsetCommit, v, b, 0));
    }
    for (i, (api, version, body, rest)) in cases.into_iter().enumerate() {
        let correlation = 1000 + i as i32;
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        frame.put_i16(api as i16);
        frame.put_i16(version);
        frame.put_i32(correlation);
        frame.put_i16(-1);
        frame.put_slice(&body);
        let len = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        send_raw(&mut s, &frame).await;
        let mut resp = read_response(&mut s).await;
        let what = format!("{api:?} v{version}");
        assert_eq!(resp.get_i32(), correlation, "{what}: correlation id");
        if api == ApiKey::Fetch && version >= 1 {
            assert_eq!(resp.get_i32(), 0, "{what}: throttle time comes first");
        }
        assert_eq!(resp.get_i32(), 1, "{what}: one topic");
        assert_eq!(resp.get_i16(), 6, "{what}: topic name length");
        assert_eq!(&resp.copy_to_bytes(6)[..], b"legacy", "{what}");
        assert_eq!(resp.get_i32(), 2, "{what}: two partitions");
        for p in [0, 1] {
            assert_eq!(resp.get_i32(), p, "{what}: partition index");
            assert_eq!(resp.get_i16(), 35, "{what}: UNSUPPORTED_VERSION");
            resp.advance(rest);
        }
        if api == ApiKey::Produce && version >= 1 {
            assert_eq!(resp.get_i32(), 0, "{what}: throttle time comes last");
        }
        assert!(!resp.has_remaining(), "{what}: trailing bytes");
    }
    // The connection is still usable, and nothing was written or committed.
    let versions: ApiVersionsResponse = common::wire::call(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    )
    .await;
    assert_eq!(versions.error_code, 0);
    assert!(
        !dir.path().join("topics/legacy").exists(),
        "no topic was created"
    );
    broker.shutdown().await.unwrap();
}

fn batch(records: usize) -> BytesMut {
    let records: Vec<Record> = (0..records)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("v{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf
}

async fn produce_raw(s: &mut TcpStream, topic: &str, records: Bytes) -> i16 {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    send_raw(s, &frame(ApiKey::Produce, 7, 9, &req)).await;
    let mut resp = read_response(s).await;
    ResponseHeader::decode(&mut resp, ApiKey::Produce.response_header_version(7)).unwrap();
    let resp = ProduceResponse::decode(&mut resp, 7).unwrap();
    resp.responses[0].partition_responses[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_crc_is_rejected_with_corrupt_message_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();

    assert_eq!(
        produce_raw(&mut s, "crc", batch(3).freeze()).await,
        0,
        "a good batch is accepted"
    );
    let mut bad = batch(2);
    let last = bad.len() - 1;
    bad[last] ^= 0x55; // inside the CRC-covered records
    assert_eq!(
        produce_raw(&mut s, "crc", bad.freeze()).await,
        2,
        "CORRUPT_MESSAGE"
    );
    // The same connection goes on working, and only the good batch is in the log.
    assert_eq!(produce_raw(&mut s, "crc", batch(1).freeze()).await, 0);
    let bootstrap = broker.bootstrap_servers();
    let got = tokio::task::spawn_blocking(move || {
        common::consume_from_beginning(&bootstrap, &[("crc", 0)], 10, Duration::from_secs(3))
    })
    .await
    .unwrap();
    let values: Vec<_> = got
        .iter()
        .map(|g| String::from_utf8(g.value.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(values, ["v0", "v1", "v2", "v0"]);
    assert_eq!(
        got.iter().map(|g| g.offset).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    broker.shutdown().await.unwrap();
}
