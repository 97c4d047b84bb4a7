//! `/ready` tells the truth: with a broker that cannot be reached it is 503 and names the
//! address, even for a service without routers (which used to say ready with no checks); the
//! database is checked by writing it; and it turns ready once the broker answers.

use std::time::Duration;

use ferry_service::{Runtime, ServiceConfig, ServiceHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn start(brokers: &str, dir: &std::path::Path, shutdown: CancellationToken) -> ServiceHandle {
    let config = ServiceConfig::new(brokers, dir, 0);
    let mut runtime = Runtime::new("ready-test", config, shutdown).unwrap();
    runtime
        .database(&[(1, "things", "CREATE TABLE things (id INTEGER PRIMARY KEY)")])
        .await
        .unwrap();
    let openapi = utoipa::openapi::OpenApiBuilder::new().build();
    runtime.serve(axum::Router::new(), openapi).await.unwrap()
}

async fn ready(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = String::new();
    stream.read_to_string(&mut got).await.unwrap();
    let (head, body) = got.split_once("\r\n\r\n").unwrap();
    (
        head[9..12].parse().unwrap(),
        serde_json::from_str(body).unwrap(),
    )
}

/// Polls `/ready` until `done` holds (at most 10 s) and returns the last answer.
async fn until(
    addr: std::net::SocketAddr,
    done: impl Fn(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = ready(addr).await;
        if done(status, &body) || tokio::time::Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ready_is_false_while_the_broker_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    // Nothing listens on port 1 of loopback.
    let server = start("127.0.0.1:1", dir.path(), shutdown.clone()).await;
    let (status, body) = until(server.addr, |_, b| {
        b["checks"]["broker"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot reach"))
            && b["checks"]["database"]["ready"] == true
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["checks"]["broker"]["ready"], false, "{body}");
    let reason = body["checks"]["broker"]["reason"].as_str().unwrap();
    assert!(reason.contains("127.0.0.1:1"), "{reason}");
    assert_eq!(body["checks"]["database"]["ready"], true, "{body}");
    shutdown.cancel();
    server.task.await.unwrap();

    // Something that accepts connections where the broker should be: ready.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let brokers = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    let shutdown = CancellationToken::new();
    let server = start(&brokers, dir.path(), shutdown.clone()).await;
    let (status, body) = until(server.addr, |s, _| s == 200).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["broker"]["ready"], true, "{body}");
    shutdown.cancel();
    server.task.await.unwrap();
}
