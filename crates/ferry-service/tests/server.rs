//! The HTTP server's connection limits and shutdown, over real sockets: the idle timeout and
//! the header-read timeout are separate clocks, neither cuts a request being served, and
//! shutdown still answers the request in flight before the server's task finishes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use ferry_service::{HttpLimits, ServiceConfig, ServiceHandle};
use ferry_toolkit::ops::Health;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const IDLE: Duration = Duration::from_millis(400);
const HEADER: Duration = Duration::from_millis(1200);
/// Timers on two sides of a socket.
const SLACK: Duration = Duration::from_millis(30);

/// What the routes signal: a slow request started, and may finish.
#[derive(Default)]
struct Gates {
    started: Notify,
    release: Notify,
}

async fn start(
    limits: HttpLimits,
    gates: Arc<Gates>,
    shutdown: CancellationToken,
) -> ServiceHandle {
    let mut config = ServiceConfig::new("unused:9092", "unused", 0);
    config.http = limits;
    let app = axum::Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/sleep",
            get(|| async {
                tokio::time::sleep(HEADER + IDLE).await;
                "slept"
            }),
        )
        .route(
            "/gated",
            get(move || async move {
                gates.started.notify_one();
                gates.release.notified().await;
                "released"
            }),
        );
    let openapi = utoipa::openapi::OpenApiBuilder::new().build();
    ferry_service::serve("test", &config, app, Health::new(), openapi, shutdown)
        .await
        .expect("serves")
}

fn limits() -> HttpLimits {
    HttpLimits {
        max_connections: 64,
        idle_timeout: IDLE,
        header_read_timeout: HEADER,
    }
}

fn request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

/// Reads one response (headers and a small body) and returns it as text.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .expect("read");
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
    }
}

/// How long after `since` the server closed `stream` (at most 10 s).
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => since.elapsed(),
        Ok(Ok(n)) => panic!("unexpected {n} bytes"),
        Err(_) => panic!("the connection is still open after 10 s"),
    }
}

#[track_caller]
fn check_close(what: &str, after: Duration, timeout: Duration) {
    assert!(
        after + SLACK >= timeout && after < timeout + Duration::from_secs(2),
        "{what}: closed after {after:?}, its timeout is {timeout:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_header_timeouts_are_separate_clocks() {
    let shutdown = CancellationToken::new();
    let server = start(limits(), Arc::default(), shutdown.clone()).await;
    let addr = server.addr;

    // Nothing sent: closed after the idle timeout.
    let opened = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Half a head sent at once: the header clock, not the idle one.
    let opened_partial = Instant::now();
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /fast HTTP/1.1\r\nHost: localhost")
        .await
        .unwrap();
    let idle = tokio::spawn(async move { closed_after(&mut silent, opened).await });
    let head = tokio::spawn(async move { closed_after(&mut partial, opened_partial).await });

    // A head that takes longer than the idle timeout, but less than the header timeout, is
    // served: the idle clock stops at the first byte.
    let mut slow_head = TcpStream::connect(addr).await.unwrap();
    let full = request("/fast");
    slow_head.write_all(&full[..5]).await.unwrap();
    tokio::time::sleep(IDLE + IDLE / 2).await;
    slow_head.write_all(&full[5..]).await.unwrap();
    let answer = read_response(&mut slow_head).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Kept alive after its response, it is closed once idle for the idle timeout.
    let answered = Instant::now();
    check_close(
        "kept-alive connection",
        closed_after(&mut slow_head, answered).await,
        IDLE,
    );

    check_close("silent connection", idle.await.unwrap(), IDLE);
    check_close("half-sent head", head.await.unwrap(), HEADER);

    // A request whose handler takes longer than both timeouts is answered, not cut.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(&request("/sleep")).await.unwrap();
    let answer = read_response(&mut busy).await;
    assert!(answer.ends_with("slept"), "{answer}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("the server stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_request_in_flight_then_stops() {
    let shutdown = CancellationToken::new();
    let gates = Arc::new(Gates::default());
    let mut server = start(HttpLimits::default(), gates.clone(), shutdown.clone()).await;
    let addr = server.addr;

    // A kept-alive idle connection must not hold the shutdown up.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(&request("/fast")).await.unwrap();
    assert!(read_response(&mut idle).await.ends_with("fast"));

    let mut in_flight = TcpStream::connect(addr).await.unwrap();
    in_flight.write_all(&request("/gated")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), gates.started.notified())
        .await
        .expect("the gated request started");

    shutdown.cancel();
    // No new connections once shut down.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still waiting for the request in flight.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut server.task)
            .await
            .is_err(),
        "the server stopped before its request in flight was answered"
    );
    gates.release.notify_one();
    let answer = read_response(&mut in_flight).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("released"),
        "{answer}"
    );
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("the server stops once its request in flight is answered")
        .unwrap();
}
