//! Connections are bounded and time out: an idle connection is closed after
//! `connections_max_idle`, a frame trickled in too slowly is cut off, and connections over
//! `max_connections` are refused, while everyone else is served. Small configured values keep
//! these tests to a few seconds of real time (real sockets: tokio's paused clock would jump while
//! bytes are in flight in the kernel).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use rdkafka::producer::FutureRecord;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An ApiVersions v0 request frame (any broker answers it).
fn api_versions(correlation_id: i32) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(0)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("limits-test")));
    header
        .encode(&mut buf, ApiKey::ApiVersions.request_header_version(0))
        .unwrap();
    ApiVersionsRequest::default().encode(&mut buf, 0).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

/// Sends ApiVersions and reads its answer: true if the broker answered within 5 s.
async fn answers(stream: &mut TcpStream, correlation_id: i32) -> bool {
    if stream
        .write_all(&api_versions(correlation_id))
        .await
        .is_err()
    {
        return false;
    }
    let read = async {
        let len = stream.read_i32().await?;
        let mut body = vec![0u8; len as usize];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(i32::from_be_bytes([body[0], body[1], body[2], body[3]]))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), read).await,
        Ok(Ok(id)) if id == correlation_id
    )
}

/// Waits (at most `within`) for the broker to close `stream`; returns when it did, or `None`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Instant> {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_broker_connection_is_closed_after_max_idle() {
    let dir = tempfile::tempdir().unwrap();
    let max_idle = Duration::from_millis(600);
    let mut config = common::config(dir.path());
    config.connections_max_idle = max_idle;
    let broker = common::start_with(config).await;
    let addr = broker.local_addr();

    // One connection that never sends anything and one that asks once and then goes quiet,
    // each watched for its close while a third keeps asking at half the idle time for three
    // idle times.
    let silent = connect(addr).await;
    let silent_opened = Instant::now();
    let mut quiet = connect(addr).await;
    assert!(answers(&mut quiet, 1).await);
    let quiet_answered = Instant::now();
    let watch = |name: &'static str, mut stream: TcpStream, since: Instant| {
        tokio::spawn(async move {
            let closed = closed_within(&mut stream, Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("the {name} connection is closed"));
            (name, closed - since)
        })
    };
    let watched = [
        watch("silent", silent, silent_opened),
        watch("quiet", quiet, quiet_answered),
    ];
    let mut busy = connect(addr).await;
    let busy_until = Instant::now() + 3 * max_idle;
    let mut id = 100;
    while Instant::now() < busy_until {
        id += 1;
        assert!(
            answers(&mut busy, id).await,
            "a connection that sends a request every {:?} is kept open",
            max_idle / 2
        );
        tokio::time::sleep(max_idle / 2).await;
    }
    for watched in watched {
        let (name, after) = watched.await.unwrap();
        assert!(
            after >= max_idle - Duration::from_millis(20) && after < 3 * max_idle,
            "the {name} connection was closed after {after:?}; the idle limit is {max_idle:?}"
        );
    }

    // A real client whose connection was closed for idleness reconnects and goes on.
    let producer = common::producer(&broker.bootstrap_servers(), "all");
    for round in 0..2 {
        producer
            .send(
                FutureRecord::to("idle-test").key("k").payload("v"),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce round {round}: {e}"));
        tokio::time::sleep(2 * max_idle).await;
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_frame_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let deadline = Duration::from_millis(600);
    let mut config = common::config(dir.path());
    config.frame_read_timeout = deadline;
    let broker = common::start_with(config).await;
    let addr = broker.local_addr();

    // A frame announced as 100 bytes, trickled one byte every 50 ms: it would take 5 s.
    let mut slow = connect(addr).await;
    slow.write_all(&100i32.to_be_bytes()).await.unwrap();
    let started = Instant::now();
    let mut cut_at = None;
    for _ in 0..100 {
        if slow.write_all(&[0]).await.is_err() {
            cut_at = Some(Instant::now()); // the broker closed it before this byte
            break;
        }
        if let Some(at) = closed_within(&mut slow, Duration::from_millis(50)).await {
            cut_at = Some(at);
            break;
        }
    }
    let cut_at = cut_at.expect("the trickled frame was cut off before it was complete");
    let after = cut_at - started;
    assert!(
        after >= deadline - Duration::from_millis(20) && after < Duration::from_secs(3),
        "cut off after {after:?}; the deadline is {deadline:?}"
    );

    // A frame that arrives in pieces but within the deadline is served.
    let mut split = connect(addr).await;
    let frame = api_versions(7);
    split.write_all(&frame[..6]).await.unwrap();
    tokio::time::sleep(deadline / 3).await;
    split.write_all(&frame[6..]).await.unwrap();
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), split.read_exact(&mut len))
        .await
        .expect("a frame completed in time is answered")
        .unwrap();

    // Time between frames is not frame time: a connection may wait longer than the deadline
    // before its next request.
    tokio::time::sleep(2 * deadline).await;
    let mut rest = vec![0u8; i32::from_be_bytes(len) as usize];
    split.read_exact(&mut rest).await.unwrap();
    assert!(answers(&mut split, 8).await);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_connection_cap_refuses_extra() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.max_connections = 3;
    let broker = common::start_with(config).await;
    let addr = broker.local_addr();

    let mut held = Vec::new();
    for i in 0..3 {
        let mut stream = connect(addr).await;
        assert!(
            answers(&mut stream, i).await,
            "connection {i} is under the cap"
        );
        held.push(stream);
    }

    // Over the cap: closed at once, never answered.
    for i in 0..5 {
        let mut extra = connect(addr).await;
        let _ = extra.write_all(&api_versions(50 + i)).await;
        assert!(
            closed_within(&mut extra, Duration::from_secs(5))
                .await
                .is_some(),
            "extra connection {i} is closed"
        );
    }

    // The held connections are untouched.
    for (i, stream) in held.iter_mut().enumerate() {
        assert!(answers(stream, 10 + i as i32).await, "held connection {i}");
    }

    // A slot freed is a slot given: once one held connection closes, a new one is served.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut served = false;
    while !served && Instant::now() < deadline {
        let mut next = connect(addr).await;
        served = answers(&mut next, 99).await;
        if served {
            held.push(next);
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(served, "a new connection is served after one closed");
    broker.shutdown().await.unwrap();
}
