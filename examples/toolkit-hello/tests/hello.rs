//! Runs the example service against an in-process broker and talks to it over HTTP.

use std::time::{Duration, Instant};

use ferry_broker::BrokerConfig;
use ferry_toolkit::kafka::KafkaConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A minimal HTTP/1.1 client: the status code and the body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.split(' ').nth(1).unwrap_or_default().parse()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `check` until it is true or 30 s passed.
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greets_and_dead_letters_over_a_real_broker() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let broker = ferry_broker::start(BrokerConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data.path().to_path_buf(),
        ..BrokerConfig::default()
    })
    .await?;
    let kafka = KafkaConfig::new(broker.bootstrap_servers())
        .set_consumer("session.timeout.ms", "6000")
        .set_consumer("heartbeat.interval.ms", "500");
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(toolkit_hello::run(listener, kafka, async {
        let _ = stopped.await;
    }));

    assert_eq!(http(addr, "GET", "/health", "").await?.0, 200);
    assert!(
        eventually(async || http(addr, "GET", "/ready", "")
            .await
            .is_ok_and(|(s, _)| s == 200))
        .await,
        "ready"
    );

    assert_eq!(
        http(addr, "POST", "/greetings", r#"{"name":"ada"}"#)
            .await?
            .0,
        202
    );
    assert_eq!(
        http(addr, "POST", "/greetings", r#"{"name":"crash"}"#)
            .await?
            .0,
        202
    );
    assert_eq!(
        http(addr, "POST", "/greetings", r#"{"name":"grace"}"#)
            .await?
            .0,
        202
    );
    assert!(
        eventually(async || http(addr, "GET", "/greeted", "")
            .await
            .is_ok_and(|(_, b)| b.contains("ada") && b.contains("grace")))
        .await,
        "greeted"
    );
    let dead_lettered = r#"ferry_messages_dead_lettered_total{service="toolkit-hello",group="toolkit-hello",topic="greetings",type="hello.greeting-requested",reason="handler-failed"} 1"#;
    assert!(
        eventually(async || http(addr, "GET", "/metrics", "")
            .await
            .is_ok_and(|(_, b)| b.contains(dead_lettered)))
        .await
    );
    assert!(!http(addr, "GET", "/greeted", "").await?.1.contains("crash"));

    let _ = stop.send(());
    service.await??;
    broker.shutdown().await?;
    Ok(())
}
